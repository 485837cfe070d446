package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

// requireE2E skips a test that needs something from outside Go (postfix, a
// mail client) when it is missing, unless SMTPGATE_REQUIRE_E2E is set, as
// in CI, where a missing piece fails the test instead.
func requireE2E(t *testing.T, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("SMTPGATE_REQUIRE_E2E") != "" {
		t.Fatalf("%s is required (SMTPGATE_REQUIRE_E2E is set) but missing", what)
	}
	t.Skipf("%s not available; .ci/run sets it up", what)
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	requireE2E(t, name, err == nil)
	return p
}

// postfixEnv returns the loopback postfix that .ci/postfix.sh set up: its
// plain and STARTTLS addresses, its certificate and its Maildir.
func postfixEnv(t *testing.T) (addr, tlsAddr, cert, maildir string) {
	t.Helper()
	addr = os.Getenv("SMTPGATE_TEST_POSTFIX_ADDR")
	maildir = os.Getenv("SMTPGATE_TEST_POSTFIX_MAILDIR")
	requireE2E(t, "postfix (SMTPGATE_TEST_POSTFIX_ADDR, SMTPGATE_TEST_POSTFIX_MAILDIR)", addr != "" && maildir != "")
	return addr, os.Getenv("SMTPGATE_TEST_POSTFIX_TLS_ADDR"), os.Getenv("SMTPGATE_TEST_POSTFIX_TLS_CERT"), maildir
}

// A gatewayProc is smtpgate's serve command, run in-process from a config
// file, exactly as the binary runs it.
type gatewayProc struct {
	submission, submissions string
	caFile                  string
	dir                     string
	logs                    *bytes.Buffer
	stop                    func() error
}

// startGateway writes a config trusting issuer, with extra (the upstream
// section and any others) at its top level, and runs serve until the test
// ends.
func startGateway(t *testing.T, issuer, extra string) *gatewayProc {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	cfg := fmt.Sprintf(`smtp:
  hostname: gw.test
  submission: 127.0.0.1:0
  submissions: 127.0.0.1:0
  tls: {cert_file: %s, key_file: %s}
oidc:
  issuers:
    - issuer: %s
      audiences: [%s]
      aliases_claim: aliases
%s
log: {level: debug, format: json}
shutdown_timeout: 5s
`, certFile, keyFile, issuer, testissuer.Audience, extra)
	path := filepath.Join(dir, "smtpgate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"serve", "-config", path}, io.Discard, pw)
		pw.CloseWithError(fmt.Errorf("run returned %v", err))
		done <- err
	}()
	g := &gatewayProc{caFile: certFile, dir: dir, logs: &bytes.Buffer{}}
	g.stop = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return fmt.Errorf("serve did not stop within 10s")
		}
	}
	t.Cleanup(func() {
		if err := g.stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	lines := make(chan map[string]any)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				t.Log(sc.Text())
				lines <- m
			}
		}
		close(lines)
	}()
	timeout := time.After(10 * time.Second)
	for g.submission == "" || g.submissions == "" {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatal("serve exited before listening")
			}
			if m["msg"] == "listening" {
				switch m["listener"] {
				case "submission":
					g.submission = m["addr"].(string)
				case "submissions":
					g.submissions = m["addr"].(string)
				}
			}
		case <-timeout:
			t.Fatal("serve did not start listening within 10s")
		}
	}
	go func() {
		for range lines {
		}
	}()
	return g
}

// writeCert makes the self-signed certificate dev mode uses.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	if err := ensureCert(dir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
}

// testMessage returns a message with a unique Message-ID to find it by.
func testMessage(t *testing.T, from, to string) (id, msg string) {
	id = fmt.Sprintf("%s.%d@example.com", strings.ReplaceAll(t.Name(), "/", "."), time.Now().UnixNano())
	msg = "From: Alice <" + from + ">\r\n" +
		"To: <" + to + ">\r\n" +
		"Subject: smtpgate end-to-end " + t.Name() + "\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\n" +
		"Message-ID: <" + id + ">\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n" +
		"Hello from the end-to-end test.\r\n" +
		".a line that starts with a dot\r\n" +
		"Gr\xc3\xbc\xc3\x9fe, Alice\r\n"
	return id, msg
}

// delivered waits for postfix to deliver the message with Message-ID id
// into the Maildir and returns the file's content.
func delivered(t *testing.T, maildir, id string) string {
	t.Helper()
	return deliveredWith(t, maildir, "Message-ID: <"+id+">")
}

// deliveredWith waits for a delivered message that contains needle.
func deliveredWith(t *testing.T, maildir, needle string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		files, _ := filepath.Glob(filepath.Join(maildir, "new", "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err == nil && bytes.Contains(b, []byte(needle)) {
				return string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message with %q delivered to %s within 20s", needle, maildir)
		}
	}
	return ""
}

// notDelivered checks that no message with id reached the Maildir. It is
// called after a later message did arrive, so postfix has had its chance.
func notDelivered(t *testing.T, maildir, id string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(maildir, "new", "*"))
	for _, f := range files {
		if b, _ := os.ReadFile(f); bytes.Contains(b, []byte(id)) {
			t.Errorf("message %s was delivered, want refused", id)
		}
	}
}

// checkDelivery compares what postfix delivered with what the client sent:
// postfix's own trace headers, then our Received header, then the message
// byte for byte (Maildir stores LF line endings).
func checkDelivery(t *testing.T, got, sent, with string) {
	t.Helper()
	i := strings.Index(got, "\nReceived: from ")
	j := strings.Index(got, "(smtpgate) with "+with+" id ")
	if i < 0 || j < 0 {
		t.Fatalf("delivered message has no smtpgate Received header with %s:\n%s", with, got)
	}
	// Our header starts at the last Received: before j.
	start := strings.LastIndex(got[:j], "Received: ")
	rest := got[start:]
	end := strings.Index(rest, "\nFrom: ")
	if end < 0 {
		t.Fatalf("no From: after our Received header:\n%s", rest)
	}
	ours, body := rest[:end+1], rest[end+1:]
	for n, line := range strings.Split(strings.TrimSuffix(ours, "\n"), "\n") {
		if n > 0 && !strings.HasPrefix(line, "\t") {
			t.Errorf("our Received header has a line that is not a continuation: %q", line)
		}
	}
	if want := strings.ReplaceAll(sent, "\r\n", "\n"); body != want {
		t.Errorf("delivered message differs from the one sent:\n got %q\nwant %q", body, want)
	}
}
