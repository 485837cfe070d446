package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

// TestNeoMutt sends with NeoMutt's OAUTHBEARER and XOAUTH2 in batch mode,
// and checks that a refused token ends its attempt (NeoMutt does not
// answer the RFC 7628 error challenge) without hanging or delivering.
//
// Debian 12's NeoMutt (20220429) refuses to send an OAUTHBEARER message
// over 768 bytes or an XOAUTH2 one over 1024 ("OAUTH token is too big"),
// so the tokens here are ES256-signed and small. With that NeoMutt, people
// whose IdP issues larger tokens (RS256 tokens of Keycloak or Entra
// are 1-4 KiB) need an app token.
func TestNeoMutt(t *testing.T) {
	neomutt := requireTool(t, "neomutt")
	pfAddr, _, _, maildir := postfixEnv(t)
	iss := testissuer.New(t)
	gw := startGateway(t, iss.URL, "upstream: {addr: "+pfAddr+", tls: none}")
	kid := iss.AddKey(t, "ES256")
	small := func(claims map[string]any) string { return iss.Sign(t, kid, nil, claims) }
	send := func(t *testing.T, mech, token string) (string, string, error) {
		home := t.TempDir()
		id := fmt.Sprintf("neomutt-%s-%d", mech, time.Now().UnixNano())
		tokenFile := filepath.Join(home, "token")
		writeFile(t, tokenFile, token, 0o600)
		writeFile(t, filepath.Join(home, "muttrc"), fmt.Sprintf(`set from = "alice@example.com"
set smtp_url = "smtp://alice@example.com@%s/"
set smtp_authenticators = "%s"
set smtp_oauth_refresh_command = "cat %s"
set ssl_starttls = yes
set ssl_force_tls = yes
set ssl_ca_certificates_file = "%s"
set record = ""
my_hdr X-Test-ID: %s
`, gw.submission, mech, tokenFile, gw.caFile, id), 0o600)
		cmd := exec.CommandContext(t.Context(), neomutt, "-n", "-F", filepath.Join(home, "muttrc"), "-s", "NeoMutt "+mech, "bob@example.test")
		cmd.Env = append(cmd.Environ(), "HOME="+home)
		cmd.Stdin = strings.NewReader("Hello from NeoMutt.\n")
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		return id, string(out), err
	}
	for _, mech := range []string{"oauthbearer", "xoauth2"} {
		t.Run(mech, func(t *testing.T) {
			interop(t, "NeoMutt", strings.ToUpper(mech))
			tok := small(nil)
			id, out, err := send(t, mech, tok)
			if err != nil {
				t.Fatalf("neomutt: %v\n%s", err, out)
			}
			got := deliveredWith(t, maildir, "X-Test-ID: "+id)
			if !strings.Contains(got, "(smtpgate) with ESMTPSA") {
				t.Errorf("delivered message has no smtpgate Received header:\n%s", got)
			}
		})
	}
	t.Run("refused token", func(t *testing.T) {
		start := time.Now()
		id, out, err := send(t, "oauthbearer", small(map[string]any{"aud": "other"}))
		if err == nil || !strings.Contains(out, "Authenticating (OAUTHBEARER)") || strings.Contains(out, "too big") {
			t.Fatalf("neomutt with a refused token: %v\n%s", err, out)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("neomutt took %v to give up", d)
		}
		// A later message arrives; the refused one must not have.
		_, later, err := send(t, "xoauth2", small(nil))
		if err != nil {
			t.Fatalf("neomutt: %v\n%s", err, later)
		}
		notDelivered(t, maildir, id)
	})
}
