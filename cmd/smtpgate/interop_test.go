package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

var update = flag.Bool("update", false, "rewrite the README's interop table from this run")

// The interop table: every row is a client and mechanism that a test in
// this package drives against smtpgate and postfix. The README's table is
// this run's outcome; a full run checks it, -update rewrites it.
var interopRows = []struct{ client, mech string }{
	{"Thunderbird (replay)", "XOAUTH2 on the AUTH line; empty line after the error challenge; Retry on the same connection"},
	{"Thunderbird for Android / K-9 (replay)", "OAUTHBEARER on the AUTH line; empty line after the error challenge"},
	{"curl", "OAUTHBEARER"},
	{"curl", "XOAUTH2 (--login-options AUTH=XOAUTH2)"},
	{"msmtp", "XOAUTH2 (waits for 334)"},
	{"msmtp", "OAUTHBEARER"},
	{"NeoMutt", "OAUTHBEARER"},
	{"NeoMutt", "XOAUTH2"},
	{"swaks", "PLAIN, app token"},
	{"swaks", "LOGIN, app token"},
	{"Python smtplib", "PLAIN, app token"},
	{"Python smtplib", "LOGIN, app token"},
	{"Python smtplib", "XOAUTH2"},
	{"Python smtplib", "OAUTHBEARER"},
}

var interopResults struct {
	sync.Mutex
	m map[string]string // client + "\x00" + mech → result
}

// interop records the outcome of the running test as the table row for
// client and mech: "sent" when the test passed (the message reached
// postfix), else "FAILED". The returned function replaces "sent" with what
// the test saw, for a client that does something other than asked.
func interop(t *testing.T, client, mech string) (note func(string)) {
	t.Helper()
	known := false
	for _, r := range interopRows {
		known = known || r.client == client && r.mech == mech
	}
	if !known {
		t.Fatalf("interop(%q, %q): not a row of interopRows", client, mech)
	}
	res := "sent"
	t.Cleanup(func() {
		if t.Failed() {
			res = "FAILED"
		}
		if t.Skipped() {
			return
		}
		interopResults.Lock()
		defer interopResults.Unlock()
		if interopResults.m == nil {
			interopResults.m = map[string]string{}
		}
		k := client + "\x00" + mech
		if interopResults.m[k] != "FAILED" {
			interopResults.m[k] = res
		}
	})
	return func(s string) { res = s }
}

// clientVersion is the version of the program behind a row, as it says.
func clientVersion(client string) string {
	field := func(n int, name string, args ...string) string {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			return "?"
		}
		f := strings.Fields(strings.SplitN(string(out), "\n", 2)[0])
		if len(f) <= n {
			return "?"
		}
		return f[n]
	}
	switch client {
	case "curl":
		return field(1, "curl", "--version")
	case "msmtp":
		return field(2, "msmtp", "--version")
	case "NeoMutt":
		return field(1, "neomutt", "-v")
	case "swaks":
		return field(2, "swaks", "--version")
	case "Python smtplib":
		// major.minor: the patch level differs between Debian's and
		// other builds and smtplib's AUTH code does not.
		v := field(1, "python3", "--version")
		if i := strings.LastIndexByte(v, '.'); strings.Count(v, ".") == 2 {
			v = v[:i]
		}
		return v
	case "Thunderbird (replay)":
		return "153 ESR's SMTP code"
	default:
		return "its SMTP code"
	}
}

// interopTable renders the table from this run, or reports false when a
// row did not run.
func interopTable() (string, bool) {
	interopResults.Lock()
	defer interopResults.Unlock()
	var b strings.Builder
	b.WriteString("| client | version | mechanism | result |\n|---|---|---|---|\n")
	versions := map[string]string{}
	for _, r := range interopRows {
		res, ok := interopResults.m[r.client+"\x00"+r.mech]
		if !ok {
			return "", false
		}
		v, ok := versions[r.client]
		if !ok {
			v = clientVersion(r.client)
			versions[r.client] = v
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.client, v, r.mech, res)
	}
	return b.String(), true
}

const (
	interopBegin = "<!-- interop table: written by `go test ./cmd/smtpgate/ -update` with .ci/run's environment; every full run checks it -->\n"
	interopEnd   = "<!-- end of interop table -->\n"
)

// checkInteropTable compares the README's table with this run's, or
// rewrites it with -update. A run that did not drive every row (a -run
// filter, or clients missing without SMTPGATE_REQUIRE_E2E) checks nothing.
func checkInteropTable() error {
	table, complete := interopTable()
	if !complete {
		if flag.Lookup("test.run").Value.String() == "" && os.Getenv("SMTPGATE_REQUIRE_E2E") != "" {
			return fmt.Errorf("interop table: not every row of interopRows ran")
		}
		return nil
	}
	const path = "../../README.md"
	readme, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(readme)
	i, j := strings.Index(s, interopBegin), strings.Index(s, interopEnd)
	if i < 0 || j < i {
		return fmt.Errorf("interop table: README.md lacks the markers %q and %q", interopBegin, interopEnd)
	}
	got := s[i+len(interopBegin) : j]
	if got == table {
		return nil
	}
	if *update {
		return os.WriteFile(path, []byte(s[:i+len(interopBegin)]+table+s[j:]), 0o644)
	}
	return fmt.Errorf("interop table: README.md's table differs from this run's; run go test ./cmd/smtpgate/ -update with .ci/run's environment. This run:\n%s", table)
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if code == 0 {
		if err := checkInteropTable(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// A wireClient speaks SMTP line by line, as a replay of a client's own
// code needs: nothing is hidden behind a library.
type wireClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	log  strings.Builder
}

func dialWire(t *testing.T, addr string) *wireClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &wireClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	c.expect(220)
	return c
}

// reply reads one reply, multi-line or not.
func (c *wireClient) reply() (int, string) {
	c.t.Helper()
	var text []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read reply: %v\n%s", err, c.log.String())
		}
		c.log.WriteString("S: " + line)
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 {
			c.t.Fatalf("short reply %q\n%s", line, c.log.String())
		}
		text = append(text, line[4:])
		if line[3] == ' ' {
			var code int
			fmt.Sscanf(line[:3], "%d", &code)
			return code, strings.Join(text, "\n")
		}
	}
}

func (c *wireClient) send(line string) {
	c.t.Helper()
	shown := line
	if len(shown) > 60 {
		shown = shown[:60] + "..."
	}
	c.log.WriteString("C: " + shown + "\n")
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wireClient) expect(code int) string {
	c.t.Helper()
	got, text := c.reply()
	if got != code {
		c.t.Fatalf("reply %d %q, want %d\n%s", got, text, code, c.log.String())
	}
	return text
}

func (c *wireClient) cmd(line string, code int) string {
	c.t.Helper()
	c.send(line)
	return c.expect(code)
}

// starttls upgrades the connection, trusting the gateway's certificate.
func (c *wireClient) starttls(caFile string) {
	c.t.Helper()
	c.cmd("STARTTLS", 220)
	pem, err := os.ReadFile(caFile)
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

// sendMessage runs one transaction with a dot-stuffed message.
func (c *wireClient) sendMessage(from, to, msg string) {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+">", 250)
	c.cmd("RCPT TO:<"+to+">", 250)
	c.cmd("DATA", 354)
	var b strings.Builder
	for _, l := range strings.SplitAfter(msg, "\r\n") {
		if strings.HasPrefix(l, ".") {
			b.WriteByte('.')
		}
		b.WriteString(l)
	}
	c.log.WriteString("C: <message>\n")
	if _, err := c.conn.Write([]byte(b.String() + ".\r\n")); err != nil {
		c.t.Fatal(err)
	}
	c.expect(250)
}

// decodeChallenge reads the JSON of an RFC 7628 / XOAUTH2 error challenge.
func decodeChallenge(t *testing.T, text string) map[string]any {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(text)
	var m map[string]any
	if err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("the error challenge %q is not base64 JSON", text)
	}
	return m
}

// TestInterop drives the clients that TestRealClients and TestNeoMutt do
// not, against smtpgate with app tokens and postfix upstream.
func TestInterop(t *testing.T) {
	pfAddr, _, _, maildir := postfixEnv(t)
	iss := testissuer.New(t)
	dir := t.TempDir()
	gw := startGateway(t, iss.URL, fmt.Sprintf("upstream: {addr: %s, tls: none}\nstore: {dsn: %s}\ntokens: {key_file: %s}",
		pfAddr, filepath.Join(dir, "db"), filepath.Join(dir, "key")))
	from, to := "alice@example.com", "bob@example.test"
	var out, errOut strings.Builder
	if err := run(t.Context(), []string{"token", "create", "-config", filepath.Join(gw.dir, "smtpgate.yaml"), "-user", from, "-label", "interop"}, &out, &errOut); err != nil {
		t.Fatalf("token create: %v\n%s", err, errOut.String())
	}
	appToken := strings.TrimSpace(out.String())
	expired := func() string { return iss.Token(t, map[string]any{"exp": time.Now().Add(-time.Hour)}) }

	// Thunderbird (SmtpClient.sys.mjs): EHLO, STARTTLS, EHLO, then
	// "AUTH XOAUTH2 <base64>" on one line. On the error challenge it
	// sends an empty line, gets 535, and the person's Retry sends AUTH
	// again with a new token on the same connection, without EHLO.
	t.Run("Thunderbird replay", func(t *testing.T) {
		interop(t, "Thunderbird (replay)", "XOAUTH2 on the AUTH line; empty line after the error challenge; Retry on the same connection")
		xoauth2 := func(tok string) string {
			return base64.StdEncoding.EncodeToString([]byte("user=" + from + "\x01auth=Bearer " + tok + "\x01\x01"))
		}
		c := dialWire(t, gw.submission)
		c.cmd("EHLO [127.0.0.1]", 250)
		c.starttls(gw.caFile)
		if ehlo := c.cmd("EHLO [127.0.0.1]", 250); !strings.Contains(ehlo, "XOAUTH2") {
			t.Fatalf("EHLO does not offer XOAUTH2:\n%s", ehlo)
		}
		c.send("AUTH XOAUTH2 " + xoauth2(expired()))
		ch := decodeChallenge(t, c.expect(334))
		if ch["status"] != "401" {
			t.Errorf("XOAUTH2 error challenge = %v, want status 401", ch)
		}
		if text := c.cmd("", 535); !strings.HasPrefix(text, "5.7.8") {
			t.Errorf("after the empty line: 535 %q, want 5.7.8", text)
		}
		c.cmd("AUTH XOAUTH2 "+xoauth2(iss.Token(t, nil)), 235)
		id, msg := testMessage(t, from, to)
		c.sendMessage(from, to, msg)
		c.cmd("QUIT", 221)
		checkDelivery(t, delivered(t, maildir, id), msg, "ESMTPSA")
	})

	// Thunderbird for Android / K-9 (SmtpTransport.kt): OAUTHBEARER with
	// the initial response, an empty line after the error challenge, 535;
	// then a new connection with a refreshed token.
	t.Run("Thunderbird for Android replay", func(t *testing.T) {
		interop(t, "Thunderbird for Android / K-9 (replay)", "OAUTHBEARER on the AUTH line; empty line after the error challenge")
		bearer := func(tok string) string {
			host, port, _ := strings.Cut(gw.submission, ":")
			return base64.StdEncoding.EncodeToString([]byte("n,a=" + from + ",\x01host=" + host + "\x01port=" + port + "\x01auth=Bearer " + tok + "\x01\x01"))
		}
		c := dialWire(t, gw.submission)
		c.cmd("EHLO [127.0.0.1]", 250)
		c.starttls(gw.caFile)
		c.cmd("EHLO [127.0.0.1]", 250)
		c.send("AUTH OAUTHBEARER " + bearer(expired()))
		ch := decodeChallenge(t, c.expect(334))
		if ch["status"] != "invalid_token" || ch["openid-configuration"] != iss.URL+"/.well-known/openid-configuration" {
			t.Errorf("OAUTHBEARER error challenge = %v", ch)
		}
		c.cmd("", 535)
		c.cmd("QUIT", 221)

		c = dialWire(t, gw.submission)
		c.cmd("EHLO [127.0.0.1]", 250)
		c.starttls(gw.caFile)
		c.cmd("EHLO [127.0.0.1]", 250)
		c.cmd("AUTH OAUTHBEARER "+bearer(iss.Token(t, nil)), 235)
		id, msg := testMessage(t, from, to)
		c.sendMessage(from, to, msg)
		c.cmd("QUIT", 221)
		checkDelivery(t, delivered(t, maildir, id), msg, "ESMTPSA")
	})

	t.Run("curl XOAUTH2", func(t *testing.T) {
		note := interop(t, "curl", "XOAUTH2 (--login-options AUTH=XOAUTH2)")
		curl := requireTool(t, "curl")
		id, msg := testMessage(t, from, to)
		out, err := runClient(t, msg, curl, "--silent", "--show-error", "--url", "smtps://"+gw.submissions,
			"--cacert", gw.caFile, "--mail-from", from, "--mail-rcpt", to, "--login-options", "AUTH=XOAUTH2",
			"--user", from+":", "--oauth2-bearer", iss.Token(t, nil), "--upload-file", "-", "-v")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		switch {
		case strings.Contains(out, "> AUTH XOAUTH2"):
		case strings.Contains(out, "> AUTH OAUTHBEARER"):
			// curl 7.88.1 (Debian 12) picks OAUTHBEARER whenever the
			// server offers it, whatever AUTH= says; newer curl honours it.
			note("sent, but curl used OAUTHBEARER: it ignores AUTH=XOAUTH2 when OAUTHBEARER is offered")
		default:
			t.Errorf("curl did not authenticate with a bearer token:\n%s", out)
		}
		checkDelivery(t, delivered(t, maildir, id), msg, "ESMTPSA")
	})

	for _, mech := range []string{"PLAIN", "LOGIN"} {
		t.Run("swaks "+mech, func(t *testing.T) {
			interop(t, "swaks", mech+", app token")
			swaks := requireTool(t, "swaks")
			host, port, _ := strings.Cut(gw.submission, ":")
			id, msg := testMessage(t, from, to)
			out, err := runClient(t, msg, swaks, "--server", host, "--port", port,
				"--tls", "--tls-verify", "--tls-ca-path", gw.caFile,
				"--auth", mech, "--auth-user", from, "--auth-password", appToken,
				"--from", from, "--to", to, "--data", "-")
			if err != nil {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
			if !strings.Contains(out, "~> AUTH "+mech) || !strings.Contains(out, "<~  235 ") {
				t.Errorf("swaks did not authenticate with %s:\n%s", mech, out)
			}
			if got := delivered(t, maildir, id); !strings.Contains(got, "(smtpgate) with ESMTPSA id ") {
				t.Errorf("swaks' message has no smtpgate Received header:\n%s", got)
			}
		})
	}

	for _, mech := range []string{"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"} {
		t.Run("python smtplib "+mech, func(t *testing.T) {
			label := mech
			secret := iss.Token(t, nil)
			if mech == "PLAIN" || mech == "LOGIN" {
				label, secret = mech+", app token", appToken
			}
			interop(t, "Python smtplib", label)
			py := requireTool(t, "python3")
			host, port, _ := strings.Cut(gw.submissions, ":")
			id, msg := testMessage(t, from, to)
			out, err := runClient(t, msg, py, "-c", pythonAuth, host, port, gw.caFile, mech, from, secret, to)
			if err != nil || out != "auth 235\nsent\n" {
				t.Fatalf("python3 %s: %v\n%s", mech, err, out)
			}
			checkDelivery(t, delivered(t, maildir, id), msg, "ESMTPSA")
		})
	}
	t.Run("python smtplib OAUTHBEARER refused", func(t *testing.T) {
		// smtplib answers the error challenge with an empty line.
		py := requireTool(t, "python3")
		host, port, _ := strings.Cut(gw.submissions, ":")
		out, _ := runClient(t, "", py, "-c", pythonAuth, host, port, gw.caFile, "OAUTHBEARER", from, expired(), to)
		if !regexp.MustCompile(`^auth 535\n$`).MatchString(out) {
			t.Errorf("python3 with an expired token: %q, want auth 535", out)
		}
	})
}

// pythonAuth authenticates over implicit TLS with smtplib's own AUTH code
// for one of the four mechanisms and sends the message from stdin.
const pythonAuth = `
import smtplib, ssl, sys
host, port, ca, mech, user, secret, rcpt = sys.argv[1:8]
msg = sys.stdin.buffer.read()
s = smtplib.SMTP_SSL(host, int(port), timeout=20, context=ssl.create_default_context(cafile=ca))
s.ehlo("python.test")
s.user, s.password = user, secret
def xoauth2(challenge=None):
    return "" if challenge is not None else "user=%s\x01auth=Bearer %s\x01\x01" % (user, secret)
def oauthbearer(challenge=None):
    return "" if challenge is not None else "n,a=%s,\x01auth=Bearer %s\x01\x01" % (user, secret)
obj = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login, "XOAUTH2": xoauth2, "OAUTHBEARER": oauthbearer}[mech]
try:
    code, _ = s.auth(mech, obj, initial_response_ok=(mech != "LOGIN"))
except smtplib.SMTPAuthenticationError as e:
    code = e.smtp_code
print("auth", code)
if code == 235:
    s.sendmail(user, [rcpt], msg)
    print("sent")
s.quit()
`
