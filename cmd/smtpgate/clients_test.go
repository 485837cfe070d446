package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

// TestRealClients sends through smtpgate to postfix with the mail clients
// people use, each with the SASL mechanism and TLS mode it picks.
func TestRealClients(t *testing.T) {
	pfAddr, _, _, maildir := postfixEnv(t)
	iss := testissuer.New(t)
	gw := startGateway(t, iss.URL, "upstream: {addr: "+pfAddr+", tls: none}")
	from, to := "alice@example.com", "bob@example.test"

	t.Run("curl OAUTHBEARER STARTTLS", func(t *testing.T) {
		interop(t, "curl", "OAUTHBEARER")
		curl := requireTool(t, "curl")
		id, msg := testMessage(t, from, to)
		out, err := runClient(t, msg, curl, "--silent", "--show-error", "--url", "smtp://"+gw.submission,
			"--ssl-reqd", "--cacert", gw.caFile, "--mail-from", from, "--mail-rcpt", to,
			"--user", from+":", "--oauth2-bearer", iss.Token(t, nil), "--upload-file", "-", "-v")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		if !strings.Contains(out, "AUTH OAUTHBEARER") {
			t.Errorf("curl did not use OAUTHBEARER:\n%s", out)
		}
		checkDelivery(t, delivered(t, maildir, id), msg, "ESMTPSA")
	})
	t.Run("curl OAUTHBEARER implicit TLS", func(t *testing.T) {
		interop(t, "curl", "OAUTHBEARER")
		curl := requireTool(t, "curl")
		id, msg := testMessage(t, from, to)
		out, err := runClient(t, msg, curl, "--silent", "--show-error", "--url", "smtps://"+gw.submissions,
			"--cacert", gw.caFile, "--mail-from", from, "--mail-rcpt", to,
			"--user", from+":", "--oauth2-bearer", iss.Token(t, nil), "--upload-file", "-")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		checkDelivery(t, delivered(t, maildir, id), msg, "ESMTPSA")
	})
	t.Run("curl bad token", func(t *testing.T) {
		curl := requireTool(t, "curl")
		id, msg := testMessage(t, from, to)
		out, err := runClient(t, msg, curl, "--silent", "--show-error", "--url", "smtp://"+gw.submission,
			"--ssl-reqd", "--cacert", gw.caFile, "--mail-from", from, "--mail-rcpt", to,
			"--user", from+":", "--oauth2-bearer", iss.Token(t, map[string]any{"aud": "someone-else"}), "--upload-file", "-", "-v")
		if err == nil {
			t.Fatalf("curl with a token for another audience succeeded:\n%s", out)
		}
		if !strings.Contains(out, "< 535 5.7.8") {
			t.Errorf("curl transcript has no 535 5.7.8:\n%s", out)
		}
		// A later message arrives; this one must not have.
		id2, msg2 := testMessage(t, from, to)
		sendPython(t, gw, iss.Token(t, nil), from, to, msg2, 235)
		delivered(t, maildir, id2)
		notDelivered(t, maildir, id)
	})
	for _, mech := range []string{"xoauth2", "oauthbearer"} {
		t.Run("msmtp "+mech, func(t *testing.T) {
			interop(t, "msmtp", map[string]string{"xoauth2": "XOAUTH2 (waits for 334)", "oauthbearer": "OAUTHBEARER"}[mech])
			msmtp := requireTool(t, "msmtp")
			id, msg := testMessage(t, from, to)
			dir := t.TempDir()
			conf, tokenFile := filepath.Join(dir, "msmtprc"), filepath.Join(dir, "token")
			writeFile(t, tokenFile, iss.Token(t, nil), 0o600)
			host, port, _ := strings.Cut(gw.submission, ":")
			writeFile(t, conf, fmt.Sprintf(`account default
host %s
port %s
tls on
tls_starttls on
tls_trust_file %s
auth %s
user %s
passwordeval "cat %s"
from %s
`, host, port, gw.caFile, mech, from, tokenFile, from), 0o600)
			out, err := runClient(t, msg, msmtp, "-C", conf, "--debug", to)
			if err != nil {
				t.Fatalf("msmtp: %v\n%s", err, out)
			}
			if !strings.Contains(out, "AUTH "+strings.ToUpper(mech)) {
				t.Errorf("msmtp did not use %s:\n%s", mech, out)
			}
			checkDelivery(t, delivered(t, maildir, id), msg, "ESMTPSA")
		})
	}
	t.Run("python smtplib XOAUTH2 inline", func(t *testing.T) {
		id, msg := testMessage(t, from, to)
		sendPython(t, gw, iss.Token(t, nil), from, to, msg, 235)
		checkDelivery(t, delivered(t, maildir, id), msg, "ESMTPSA")
	})
	t.Run("python smtplib sender mismatch", func(t *testing.T) {
		id, msg := testMessage(t, "mallory@example.com", to)
		sendPython(t, gw, iss.Token(t, nil), "mallory@example.com", to, msg, 550)
		id2, msg2 := testMessage(t, from, to)
		sendPython(t, gw, iss.Token(t, nil), from, to, strings.Replace(msg2, "From: Alice <alice@", "From: Mallory <mallory@", 1), 550)
		id3, msg3 := testMessage(t, from, to)
		sendPython(t, gw, iss.Token(t, nil), from, to, msg3, 235)
		delivered(t, maildir, id3)
		notDelivered(t, maildir, id)
		notDelivered(t, maildir, id2)
	})
	t.Run("postfix refuses one recipient", func(t *testing.T) {
		id, msg := testMessage(t, from, to)
		out := python(t, gw, iss.Token(t, nil), from, []string{to, "reject@example.test"}, msg)
		if !strings.Contains(out, "refused reject@example.test 550") {
			t.Errorf("python output = %q, want reject@example.test refused with 550", out)
		}
		checkDelivery(t, delivered(t, maildir, id), msg, "ESMTPSA")
	})
}

// TestUpstreamSTARTTLS relays to postfix over STARTTLS, trusting its
// certificate through upstream.ca_file.
func TestUpstreamSTARTTLS(t *testing.T) {
	_, tlsAddr, cert, maildir := postfixEnv(t)
	requireE2E(t, "postfix STARTTLS listener (SMTPGATE_TEST_POSTFIX_TLS_ADDR, _TLS_CERT)", tlsAddr != "" && cert != "")
	iss := testissuer.New(t)
	gw := startGateway(t, iss.URL, "upstream: {addr: "+tlsAddr+", tls: starttls, ca_file: "+cert+", server_name: localhost}")
	id, msg := testMessage(t, "alice@example.com", "bob@example.test")
	sendPython(t, gw, iss.Token(t, nil), "alice@example.com", "bob@example.test", msg, 235)
	got := delivered(t, maildir, id)
	if !strings.Contains(got, "(Postfix) with ESMTPS id") {
		t.Errorf("postfix did not receive over TLS:\n%s", got)
	}
	checkDelivery(t, got, msg, "ESMTPSA")
}

const pythonSend = `
import base64, smtplib, ssl, sys
host, port, ca, token, user, sender = sys.argv[1:7]
rcpts = sys.argv[7].split(",")
msg = sys.stdin.buffer.read()
s = smtplib.SMTP(host, int(port), timeout=20)
s.starttls(context=ssl.create_default_context(cafile=ca))
s.ehlo("python.test")
# XOAUTH2 with the initial response on the AUTH line, as Thunderbird does.
ir = base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode()).decode()
code, resp = s.docmd("AUTH", "XOAUTH2 " + ir)
print("auth", code)
if code != 235:
    sys.exit(0)
try:
    refused = s.sendmail(sender, rcpts, msg)
    for r, (c, m) in refused.items():
        print("refused", r, c)
    print("sent")
except smtplib.SMTPSenderRefused as e:
    print("sender", e.smtp_code)
except smtplib.SMTPDataError as e:
    print("data", e.smtp_code)
s.quit()
`

func python(t *testing.T, gw *gatewayProc, token, from string, to []string, msg string) string {
	t.Helper()
	py := requireTool(t, "python3")
	host, port, _ := strings.Cut(gw.submission, ":")
	out, err := runClient(t, msg, py, "-c", pythonSend, host, port, gw.caFile, token, "alice@example.com", from, strings.Join(to, ","))
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	return out
}

// sendPython sends msg and checks the outcome: 235 means sent, 535 refused
// at AUTH, 550 refused at MAIL or DATA.
func sendPython(t *testing.T, gw *gatewayProc, token, from, to, msg string, want int) {
	t.Helper()
	out := python(t, gw, token, from, []string{to}, msg)
	ok := false
	switch want {
	case 235:
		ok = strings.Contains(out, "auth 235") && strings.Contains(out, "sent")
	case 535:
		ok = strings.Contains(out, "auth 535")
	case 550:
		ok = strings.Contains(out, "sender 550") || strings.Contains(out, "data 550")
	}
	if !ok {
		t.Errorf("python3 output = %q, want outcome %d", out, want)
	}
}

func runClient(t *testing.T, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}
