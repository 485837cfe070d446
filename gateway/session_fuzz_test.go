package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// fixedTokens accepts one bearer token, for driving sessions without an
// identity provider.
type fixedTokens struct{}

func (fixedTokens) VerifyToken(_ context.Context, tok string) (Identity, error) {
	if tok != "good" {
		return Identity{}, &AuthError{Reason: "unknown token"}
	}
	return Identity{Subject: "test#alice", Addresses: []string{"alice@example.com"}}, nil
}

type discardBackend struct{}

func (discardBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return discardUp{}, nil }

type discardUp struct{}

func (discardUp) Mail(string, *smtp.MailOptions) error { return nil }
func (discardUp) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (discardUp) Reset()                               {}
func (discardUp) Logout() error                        { return nil }
func (discardUp) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }

// newPipeServer returns a gateway relaying to a discarding go-smtp
// upstream, and a function that runs one session over loopback: it writes
// each part, closes its side, and returns everything the server said.
func newPipeServer(tb testing.TB, cfg Config) func(parts ...[]byte) []byte {
	tb.Helper()
	up := smtp.NewServer(discardBackend{})
	up.Domain = "upstream.test"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go up.Serve(l)
	tb.Cleanup(func() { up.Close() })
	cfg.Hostname = "gw.test"
	cfg.AllowInsecureAuth = true
	cfg.Tokens = fixedTokens{}
	cfg.AuthFailureDelay = -1
	cfg.ReadTimeout = 2 * time.Second
	cfg.Upstream = UpstreamConfig{Addr: l.Addr().String(), TLS: UpstreamTLSNone}
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	pair, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pair.Close() })
	return func(parts ...[]byte) []byte {
		client, err := net.Dial("tcp", pair.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		defer client.Close()
		server, err := pair.Accept()
		if err != nil {
			tb.Fatal(err)
		}
		c := s.newConn(server, false)
		if c == nil {
			tb.Fatal("server closed")
		}
		done := make(chan struct{})
		go func() { c.serve(); close(done) }()
		var out bytes.Buffer
		var wg sync.WaitGroup
		wg.Go(func() { io.Copy(&out, client) })
		client.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for _, p := range parts {
			client.Write(p)
		}
		client.(*net.TCPConn).CloseWrite()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			tb.Fatalf("session on %q did not end", parts)
		}
		wg.Wait()
		return out.Bytes()
	}
}

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9][ -][^\r\n]*$`)

// FuzzSession feeds the raw byte stream of a whole session to the engine:
// it must never panic or hang, and everything it says must be well-formed
// reply lines.
func FuzzSession(f *testing.F) {
	ir := base64.StdEncoding.EncodeToString([]byte("n,,\x01auth=Bearer good\x01\x01"))
	for _, s := range []string{
		"EHLO remote\r\nQUIT\r\n",
		"HELO remote\r\nNOOP\r\nRSET\r\nVRFY x\r\nHELP\r\nQUIT\r\n",
		"EHLO remote\r\nAUTH OAUTHBEARER " + ir + "\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nFrom: alice@example.com\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"EHLO remote\r\nAUTH OAUTHBEARER\r\n" + ir + "\r\nMAIL FROM:<alice@example.com> SIZE=10 BODY=8BITMIME\r\nRCPT TO:<\"a b\"@example.org>\r\nDATA\r\nhi\n.\n\r\n.\r\n",
		"EHLO remote\r\nAUTH XOAUTH2 =\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN\r\n",
		"EHLO remote\r\nAUTH OAUTHBEARER " + ir + "\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<b@example.org>\r\nBDAT 5 LAST\r\nhelloQUIT\r\n",
		"EHLO remote\r\nSTARTTLS\r\n",
		"MAIL FROM:<x>\r\nDATA\r\n",
		"\r\n\n\r\x00",
	} {
		f.Add([]byte(s))
	}
	run := newPipeServer(f, Config{MaxMessageBytes: 4096, MaxLineLength: 32 << 10})
	f.Fuzz(func(t *testing.T, in []byte) {
		out := run(in)
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Split(splitCRLF)
		for sc.Scan() {
			if !replyLine.MatchString(sc.Text()) {
				t.Fatalf("session %q: server said %q, not a reply line (all: %q)", in, sc.Text(), out)
			}
		}
		if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
			t.Fatalf("session %q: output %q does not end in CRLF", in, out)
		}
	})
}

func splitCRLF(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.Index(data, []byte("\r\n")); i >= 0 {
		return i + 2, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// TestPipelinedSplit sends a whole pipelined session in two writes, split
// at every byte, and wants the same replies each time (RFC 2920).
func TestPipelinedSplit(t *testing.T) {
	run := newPipeServer(t, Config{})
	ir := base64.StdEncoding.EncodeToString([]byte("n,,\x01auth=Bearer good\x01\x01"))
	session := "EHLO client.test\r\nAUTH OAUTHBEARER " + ir + "\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\n" +
		"RCPT TO:<carol@example.org>\r\nDATA\r\nFrom: alice@example.com\r\n\r\n..dot\r\nhi\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n"
	codes := func(out []byte) string {
		var cs []string
		for _, l := range strings.Split(strings.TrimSuffix(string(out), "\r\n"), "\r\n") {
			if len(l) >= 4 && l[3] == ' ' {
				cs = append(cs, l[:3])
			}
		}
		return strings.Join(cs, " ")
	}
	want := "220 250 235 250 250 250 354 250 250 250 221"
	if got := codes(run([]byte(session))); got != want {
		t.Fatalf("replies = %s, want %s", got, want)
	}
	for i := 1; i < len(session); i++ {
		if got := codes(run([]byte(session[:i]), []byte(session[i:]))); got != want {
			t.Fatalf("split at %d (%q | %q): replies = %s, want %s", i, session[:i], session[i:], got, want)
		}
	}
}

// FuzzParsePath: a parsed address, printed and parsed again, is the same,
// and never carries what would end the path or start a parameter outside
// a quoted local part.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"<alice@example.com>", "<>", " <a@b> SIZE=1", `<"bob@x> NOTIFY=SUCCESS"@y>`, `<@r1,@r2:a@b>`, "<j\u00f6rg@example.com>", `<"a\"b"@c>`, "<a@[127.0.0.1]>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, _, err := parsePathArg(s)
		if err != nil || addr == "" {
			return
		}
		again, params, err := parsePathArg("<" + addr + ">")
		if err != nil || again != addr || len(params) != 0 {
			t.Fatalf("parsePathArg(%q) = %q, which parses again as %q %q %v", s, addr, again, params, err)
		}
		if !strings.HasPrefix(addr, `"`) && strings.ContainsAny(addr, "<> \r\n") {
			t.Fatalf("parsePathArg(%q) = %q, unquoted with a delimiter", s, addr)
		}
	})
}
