package main

import (
	"archive/zip"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/oidc/devprovider"
	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

// writeConfig writes a config trusting issuer, with extra at its top level.
func writeConfig(t *testing.T, issuer, extra string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "smtpgate.yaml")
	writeFile(t, path, `smtp:
  hostname: mail.example.com
  submissions: ""
  allow_insecure_auth: true
oidc:
  issuers:
    - issuer: `+issuer+`
      audiences: [`+testissuer.Audience+`]
      required_scopes: [smtp.send]
upstream: {addr: "127.0.0.1:25", tls: none}
`+extra, 0o600)
	return path
}

func TestCheckTokenCommand(t *testing.T) {
	iss := testissuer.New(t)
	cfg := writeConfig(t, iss.URL, "")
	good := iss.Token(t, map[string]any{"scope": "openid smtp.send"})
	var out, errOut strings.Builder
	if err := checkTokenCmd(t.Context(), []string{"-config", cfg, good}, nil, &out, &errOut); err != nil {
		t.Errorf("check-token on a good token = %v\n%s", err, out.String())
	}
	for _, want := range []string{"ok   issuer", "ok   signature", `kid "k1"`, "ok   expiry", "ok   scope", "accepted: alice@example.com"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check-token output lacks %q:\n%s", want, out.String())
		}
	}
	// From stdin, with every problem listed and a non-zero exit.
	out.Reset()
	bad := iss.Token(t, map[string]any{"aud": "other", "exp": time.Now().Add(-2 * time.Hour)})
	err := checkTokenCmd(t.Context(), []string{"-config", cfg, "-"}, strings.NewReader("Bearer "+bad+"\n"), &out, &errOut)
	if !errors.Is(err, errRefused) {
		t.Errorf("check-token on a bad token = %v, want it refused", err)
	}
	for _, want := range []string{"FAIL expiry", "FAIL audience", "FAIL scope", "refused: token expired"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check-token output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), bad) {
		t.Error("check-token printed the token")
	}
	// Through run, as the binary does: the exit status is the verdict.
	if err := run(t.Context(), []string{"check-token", "-config", cfg, "x.y.z"}, io.Discard, io.Discard); err == nil {
		t.Error("run check-token on garbage = nil, want an error (exit 1)")
	}
	if err := checkTokenCmd(t.Context(), []string{"-config", cfg}, nil, &out, &errOut); err == nil {
		t.Error("check-token without a token succeeded")
	}
}

func TestThunderbirdAddonCommand(t *testing.T) {
	idp := startIdP(t)
	cfg := writeConfig(t, idp, "autoconfig: {domains: [example.com]}\nthunderbird: {client_id: thunderbird}\n")
	out := filepath.Join(t.TempDir(), "addon.xpi")
	var stdout strings.Builder
	if err := run(t.Context(), []string{"thunderbird-addon", "-config", cfg, "-o", out}, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "extensions/oauth-provider@mail.example.com.xpi") {
		t.Errorf("output: %s", stdout.String())
	}
	z, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	f, err := z.Open("manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		OAuthProvider struct {
			Issuer, ClientID, AuthorizationEndpoint, TokenEndpoint string
			Hostnames                                              []string
		} `json:"oauth_provider"`
	}
	if err := json.NewDecoder(f).Decode(&m); err != nil {
		t.Fatal(err)
	}
	op := m.OAuthProvider
	if op.ClientID != "thunderbird" || op.AuthorizationEndpoint != idp+"/authorize" || !strings.HasPrefix(op.TokenEndpoint, idp+"/") ||
		strings.Join(op.Hostnames, ",") != "mail.example.com,example.com" || op.Issuer != "127.0.0.1" {
		t.Errorf("oauth_provider = %+v", op)
	}

	// Refusals: no client, no -o, a built-in name.
	noTB := writeConfig(t, idp, "")
	if err := run(t.Context(), []string{"thunderbird-addon", "-config", noTB, "-o", out}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "client_id") {
		t.Errorf("without thunderbird.client_id: %v", err)
	}
	if err := run(t.Context(), []string{"thunderbird-addon", "-config", cfg}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "-o FILE") {
		t.Errorf("without -o: %v", err)
	}
	google := writeConfig(t, idp, "thunderbird: {client_id: x, provider_name: accounts.google.com}\n")
	if err := run(t.Context(), []string{"thunderbird-addon", "-config", google, "-o", out}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "built-in") {
		t.Errorf("provider_name accounts.google.com: %v", err)
	}
}

// startIdP runs the development provider on loopback and returns its
// issuer URL.
func startIdP(t *testing.T) string {
	t.Helper()
	idp := httptest.NewUnstartedServer(nil)
	p, err := devprovider.New(devprovider.Config{
		Issuer:        "http://" + idp.Listener.Addr().String(),
		Users:         []devprovider.User{{Username: "alice", Password: "pw", Email: "alice@example.com", EmailVerified: true}},
		Clients:       []devprovider.Client{{ID: "thunderbird", RedirectURIs: []string{"http://localhost"}}},
		AllowInsecure: true,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	idp.Config.Handler = p.Handler()
	idp.Start()
	t.Cleanup(idp.Close)
	return idp.URL
}

func TestSetupConfigErrors(t *testing.T) {
	base := "smtp: {hostname: h, submissions: \"\", allow_insecure_auth: true}\noidc: {issuers: [{issuer: \"https://idp.example\", audiences: [a]}]}\nupstream: {addr: \"127.0.0.1:25\", tls: none}\n"
	_, err := parseConfig(strings.NewReader(base + `
autoconfig:
  domains: [example.com, "not a domain"]
  incoming: {type: exchange, hostname: imap.example.com, socket_type: TLS}
thunderbird:
  provider_name: login.microsoftonline.com
  scopes: [openid, "two words"]
`))
	for _, want := range []string{`autoconfig.domains[1] "not a domain"`, `autoconfig.incoming.type "exchange"`, `socket_type "TLS"`, "built-in providers", `thunderbird.scopes[1]`, "client_id is required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseConfig error = %v, want it to contain %q", err, want)
		}
	}
	cfg, err := parseConfig(strings.NewReader(base + "autoconfig: {domains: [Example.COM], incoming: {type: imap, hostname: imap.example.com}}\nthunderbird: {client_id: tb}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Autoconfig.Domains[0] != "example.com" || cfg.Autoconfig.Incoming.Port != 993 || len(cfg.Thunderbird.Scopes) != 3 {
		t.Errorf("defaults not filled: %+v %+v", cfg.Autoconfig, cfg.Thunderbird)
	}
}
