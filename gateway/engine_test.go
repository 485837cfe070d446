package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/gateway"
	"github.com/smtpgate/smtpgate/oidc"
)

// These tests cover the SMTP server engine: what go-smtp's server got
// wrong, and the limits.

// readReply reads one (possibly multi-line) reply within d.
func (c *rawClient) readReply(d time.Duration) (int, string, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	defer c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	return c.tp.ReadResponse(0)
}

func TestBDATRefused(t *testing.T) {
	e := newTestEnv(t)
	c := e.dialAuth(t, e.token(nil))
	if ehlo := c.cmd("EHLO client.test", 250); strings.Contains(ehlo, "CHUNKING") {
		t.Errorf("EHLO = %q, want no CHUNKING", ehlo)
	}
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	// The chunk holds command lines: they must be skipped, not run.
	chunk := "From: alice@example.com\r\n\r\nRSET\r\nMAIL FROM:<ceo@example.com>\r\n"
	fmt.Fprintf(c.conn, "BDAT %d LAST\r\n%s", len(chunk), chunk)
	if reply := c.expect(502); !strings.HasPrefix(reply, "5.5.1") {
		t.Errorf("BDAT reply = %q, want 5.5.1", reply)
	}
	// The transaction is still the client's: DATA works.
	c.cmd("DATA", 354)
	c.data(testMessage, 250)

	// go-smtp relayed "BDAT 200 LAST" followed by 87 bytes and a clean
	// close as a whole message.
	c = e.dialAuth(t, e.token(nil))
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	io.WriteString(c.conn, "BDAT 200 LAST\r\nFrom: alice@example.com\r\n\r\n"+strings.Repeat("x", 87-27))
	c.conn.(*tls.Conn).CloseWrite()
	c.closed()
	if n := len(e.up.messages()); n != 1 {
		t.Errorf("upstream got %d messages, want 1 (only the DATA one)", n)
	}
}

// TestSmugglingSequences sends each end-of-data look-alike: the result is
// one message or a refusal within a second, never a second message, never
// a hang.
func TestSmugglingSequences(t *testing.T) {
	e := newTestEnv(t)
	seqs := []string{"\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\r\n.\n", "\n.\r"}
	for _, seq := range seqs {
		t.Run(fmt.Sprintf("%q", seq), func(t *testing.T) {
			before := len(e.up.messages())
			c := e.dialAuth(t, e.token(nil))
			c.cmd("MAIL FROM:<alice@example.com>", 250)
			c.cmd("RCPT TO:<bob@example.org>", 250)
			c.cmd("DATA", 354)
			smuggled := "MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nFrom: ceo@example.com\r\n\r\nwire money\r\n"
			io.WriteString(c.conn, "From: alice@example.com\r\n\r\nhello"+seq+smuggled+".\r\n")
			code, msg, err := c.readReply(time.Second)
			if err != nil {
				t.Fatalf("no reply within a second: %v", err)
			}
			if code != 250 && code/100 != 5 {
				t.Fatalf("reply = %d %s, want 250 or a refusal", code, msg)
			}
			// Nothing else is queued: the next reply is NOOP's.
			if got := c.cmd("NOOP", 250); got != "2.0.0 OK" {
				t.Errorf("NOOP reply = %q: another command ran", got)
			}
			msgs := e.up.messages()[before:]
			if len(msgs) > 1 || code == 250 && len(msgs) != 1 {
				t.Fatalf("upstream got %d messages, want %d", len(msgs), map[bool]int{true: 1}[code == 250])
			}
			for _, m := range msgs {
				if len(m.to) != 1 || m.to[0] != "bob@example.org" {
					t.Errorf("upstream recipients %q", m.to)
				}
			}
		})
	}
}

// TestBareCRBeforeEnd: go-smtp's DATA reader missed the end of data after
// a bare CR and waited for the read timeout.
func TestBareCRBeforeEnd(t *testing.T) {
	e := newTestEnv(t)
	c := e.dialAuth(t, e.token(nil))
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	io.WriteString(c.conn, "From: alice@example.com\r\n\r\nhello\r\r\n.\r\n")
	if code, msg, err := c.readReply(time.Second); code != 250 || err != nil {
		t.Fatalf("reply = %d %s %v, want 250 within a second", code, msg, err)
	}
	msgs := e.up.messages()
	if len(msgs) != 1 || !strings.HasSuffix(string(msgs[0].data), "\r\n\r\nhello\r\n\r\n") {
		t.Fatalf("upstream got %q", msgs)
	}
}

func TestLongLines(t *testing.T) {
	e := newTestEnv(t)
	c := e.dialStartTLS(t)
	// go-smtp ran the first part of this line inside TLS as a command.
	fmt.Fprintf(c.conn, "NOOP %s\r\nNOOP\r\n", strings.Repeat("x", 70<<10))
	if reply := c.expect(500); !strings.HasPrefix(reply, "5.5.6 Line too long") {
		t.Errorf("reply = %q, want 5.5.6 Line too long", reply)
	}
	c.expect(250)
	c.cmd("MAIL FROM:<"+strings.Repeat("a", 3000)+"@example.com>", 500)
	c.cmd("HELO "+strings.Repeat("h", 600), 500)
	// An AUTH line may carry a 60 KiB token (and is refused as a token).
	c.auth("XOAUTH2", xoauth2("", strings.Repeat("t", 45<<10)), 334)
	c.cmd("", 535)
	c.cmd("NOOP", 250)
}

func TestAuthBase64(t *testing.T) {
	e := newTestEnv(t)
	c := e.dialStartTLS(t)
	if reply := c.cmd("AUTH XOAUTH2 !!!notbase64", 501); !strings.HasPrefix(reply, "5.5.2") {
		t.Errorf("reply = %q, want 5.5.2", reply)
	}
	c.cmd("AUTH OAUTHBEARER", 334)
	c.cmd("%%%", 501)
	c.auth("XOAUTH2", xoauth2("", e.token(nil)), 235)
}

func TestReplyCodes(t *testing.T) {
	e := newTestEnv(t)
	c := e.dialAuth(t, e.token(nil))
	for _, tc := range []struct {
		line string
		code int
		enh  string
	}{
		{"MAIL FROM:<alice@example.com> SIZE=100 BODY=8BITMIME", 250, "2.1.0 "},
		{"RCPT TO:<bob@example.org>", 250, "2.1.5 "},
		{"RCPT TO:<bob@example.org> NOTIFY=SUCCESS", 555, "5.5.4 "},
		{"RCPT TO:<>", 501, "5.1.3 "},
		{"RCPT TO:<j\u00f6rg@example.org>", 553, "5.6.7 "},
		{"RSET", 250, "2.0.0 "},
		{"RCPT TO:<bob@example.org>", 503, "5.5.1 "},
		{"DATA", 503, "5.5.1 "},
		{"MAIL FROM:alice@example.com", 501, "5.1.7 "},
		{"MAIL FROM:<alice@example.com> SIZE=999999999999", 552, "5.3.4 "},
		{"MAIL FROM:<alice@example.com> RET=FULL", 555, "5.5.4 "},
		{"VRFY bob", 252, "2.5.0 "},
		{"HELP", 214, "2.0.0 "},
		{"EXPN list", 502, "5.5.1 "},
		{"FOO", 500, "5.5.1 "},
		{"NOOP", 250, "2.0.0 "},
	} {
		if got := c.cmd(tc.line, tc.code); !strings.HasPrefix(got, tc.enh) {
			t.Errorf("%s: reply %d %q, want enhanced code %q", tc.line, tc.code, got, tc.enh)
		}
	}
	c.cmd("QUIT", 221)
}

// TestQuotedLocalPart forwards a quoted local part quoted, so it cannot
// turn into ESMTP parameters at the upstream.
func TestQuotedLocalPart(t *testing.T) {
	var mu sync.Mutex
	var rcpts []string
	up := newScriptedUpstream(t, true, func(cmd string) (string, bool) {
		if strings.HasPrefix(cmd, "RCPT") {
			mu.Lock()
			rcpts = append(rcpts, cmd)
			mu.Unlock()
		}
		return standardAnswer(cmd), true
	})
	e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.Upstream.Addr = up.addr })
	c := e.dialAuth(t, e.token(nil))
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	c.cmd(`RCPT TO:<"bob@x> NOTIFY=SUCCESS"@example.org>`, 250)
	c.cmd(`RCPT TO:<"carol"@example.org>`, 250)
	c.cmd(`RCPT TO:<"a\"b"@example.org>`, 250)
	c.cmd("DATA", 354)
	c.data(testMessage, 250)
	mu.Lock()
	defer mu.Unlock()
	want := []string{`RCPT TO:<"bob@x> NOTIFY=SUCCESS"@example.org>`, `RCPT TO:<carol@example.org>`, `RCPT TO:<"a\"b"@example.org>`}
	if strings.Join(rcpts, "|") != strings.Join(want, "|") {
		t.Errorf("upstream got %q, want %q", rcpts, want)
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Run("total", func(t *testing.T) {
		e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.MaxConns = 2 })
		e.dial(t)
		e.dial(t)
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := newRawClientNoGreeting(t, conn)
		if code, msg, _ := c.readReply(5 * time.Second); code != 421 || !strings.Contains(msg, "4.7.0 Too many connections") {
			t.Errorf("third connection: %d %s, want 421 4.7.0 Too many connections", code, msg)
		}
	})
	t.Run("refused connections do not count", func(t *testing.T) {
		e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.MaxConns = 1 })
		a := e.dialTLS(t)
		// Refused on port 465, this one waits out its handshake.
		stalled, err := net.Dial("tcp", e.tlsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer stalled.Close()
		a.cmd("QUIT", 221)
		a.closed()
		// The one accepted connection is gone: the next one is served,
		// even while the refused one lingers. Closing takes the server a
		// moment, so try a few times.
		for i := range 50 {
			conn, err := tls.Dial("tcp", e.tlsAddr, e.clientTLS)
			if err != nil {
				t.Fatal(err)
			}
			c := newRawClientNoGreeting(t, conn)
			code, msg, _ := c.readReply(5 * time.Second)
			conn.Close()
			if code == 220 {
				return
			}
			if i == 49 {
				t.Fatalf("after the only accepted connection closed: %d %s, want 220", code, msg)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	t.Run("per client, implicit TLS", func(t *testing.T) {
		e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.MaxConnsPerClient = 1 })
		e.dialTLS(t)
		conn, err := tls.Dial("tcp", e.tlsAddr, e.clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := newRawClientNoGreeting(t, conn)
		if code, msg, _ := c.readReply(5 * time.Second); code != 421 || !strings.Contains(msg, "from your address") {
			t.Errorf("second connection: %d %s, want 421 from your address", code, msg)
		}
	})
	t.Run("unauthenticated commands", func(t *testing.T) {
		e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.MaxUnauthCommands = 5 })
		c := e.dial(t)
		for range 5 {
			c.cmd("NOOP", 250)
		}
		if reply := c.cmd("NOOP", 421); !strings.Contains(reply, "4.7.0 Too many commands") {
			t.Errorf("reply = %q", reply)
		}
		if !c.closed() {
			t.Error("connection still open")
		}
		// Authenticated clients are not counted.
		a := e.dialAuth(t, e.token(nil))
		for range 5 {
			a.cmd("NOOP", 250)
		}
	})
	t.Run("transactions per identity", func(t *testing.T) {
		e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.MaxTransactionsPerIdentity = 1 })
		tok := e.token(nil)
		a, b := e.dialAuth(t, tok), e.dialAuth(t, tok)
		a.cmd("MAIL FROM:<alice@example.com>", 250)
		if reply := b.cmd("MAIL FROM:<alice@example.com>", 421); !strings.Contains(reply, "4.7.0 Too many messages under way") {
			t.Errorf("reply = %q", reply)
		}
		a.cmd("RSET", 250)
		c := e.dialAuth(t, tok)
		c.cmd("MAIL FROM:<alice@example.com>", 250)
	})
}

func TestPhaseDeadlines(t *testing.T) {
	// Deadlines long enough for a loaded CI machine to get through the
	// steps before them, short enough to keep the test quick.
	short := time.Second
	t.Run("pre-auth", func(t *testing.T) {
		e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.PreAuthTimeout = short })
		c := e.dial(t)
		c.cmd("EHLO client.test", 250)
		if code, msg, _ := c.readReply(5 * time.Second); code != 421 || !strings.Contains(msg, "4.7.0 Authentication not completed") {
			t.Errorf("got %d %s", code, msg)
		}
	})
	t.Run("session duration", func(t *testing.T) {
		e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.MaxSessionDuration = 2 * time.Second })
		c := e.dialAuth(t, e.token(nil))
		if code, msg, _ := c.readReply(5 * time.Second); code != 421 || !strings.Contains(msg, "4.7.0 Maximum session duration") {
			t.Errorf("got %d %s", code, msg)
		}
	})
	t.Run("transaction", func(t *testing.T) {
		e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.TransactionTimeout = 2 * time.Second })
		c := e.dialAuth(t, e.token(nil))
		c.cmd("MAIL FROM:<alice@example.com>", 250)
		c.cmd("RCPT TO:<bob@example.org>", 250)
		c.cmd("DATA", 354)
		io.WriteString(c.conn, "From: alice@example.com\r\n\r\nhalf a mess")
		if code, msg, _ := c.readReply(5 * time.Second); code != 421 || !strings.Contains(msg, "4.7.0 Message took too long") {
			t.Errorf("got %d %s", code, msg)
		}
		if n := len(e.up.messages()); n != 0 {
			t.Errorf("upstream got %d messages, want 0", n)
		}
	})
	t.Run("client stalls mid-DATA", func(t *testing.T) {
		e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.ReadTimeout = short })
		c := e.dialAuth(t, e.token(nil))
		c.cmd("MAIL FROM:<alice@example.com>", 250)
		c.cmd("RCPT TO:<bob@example.org>", 250)
		c.cmd("DATA", 354)
		io.WriteString(c.conn, testMessage+strings.Repeat("y", 100<<10))
		code, msg, _ := c.readReply(5 * time.Second)
		if code != 421 || !strings.HasPrefix(msg, "4.4.2") || strings.Contains(msg, "127.0.0.1") || strings.Contains(msg, "i/o") {
			t.Errorf("got %d %s, want 421 4.4.2 without Go error text", code, msg)
		}
		if n := len(e.up.messages()); n != 0 {
			t.Errorf("upstream got %d messages, want 0", n)
		}
	})
	t.Run("client hangs up mid-DATA", func(t *testing.T) {
		e := newTestEnv(t)
		c := e.dialAuth(t, e.token(nil))
		c.cmd("MAIL FROM:<alice@example.com>", 250)
		c.cmd("RCPT TO:<bob@example.org>", 250)
		c.cmd("DATA", 354)
		io.WriteString(c.conn, testMessage+strings.Repeat("z\r\n", 50<<10))
		c.conn.(*tls.Conn).CloseWrite() // a clean TLS close_notify
		c.closed()
		// A second client's message goes through, and is the only one.
		c = e.dialAuth(t, e.token(nil))
		c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
		if n := len(e.up.messages()); n != 1 {
			t.Errorf("upstream got %d messages, want 1", n)
		}
	})
}

// expiringTokens marks every identity expired a moment after AUTH.
type expiringTokens struct {
	v       gateway.TokenVerifier
	expires time.Time
}

func (x expiringTokens) VerifyToken(ctx context.Context, tok string) (gateway.Identity, error) {
	id, err := x.v.VerifyToken(ctx, tok)
	id.Expires = x.expires
	return id, err
}

// revocations is a CredentialChecker over a set of revoked app token ids.
type revocations struct {
	mu      sync.Mutex
	revoked map[string]bool
}

func (r *revocations) CheckCredential(_ context.Context, id gateway.Identity) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.revoked[id.AppTokenID] {
		return &gateway.AuthError{Reason: "app token revoked"}
	}
	return nil
}

func TestCredentialRecheckedAtMail(t *testing.T) {
	t.Run("expired token", func(t *testing.T) {
		e := newTestEnv(t, func(gc *gateway.Config, vc *oidc.Config) {
			v, _ := oidc.New(*vc)
			gc.Tokens = expiringTokens{tokenVerifier{v}, time.Now().Add(-time.Second)}
		})
		c := e.dialAuth(t, e.token(nil))
		if reply := c.cmd("MAIL FROM:<alice@example.com>", 421); !strings.Contains(reply, "4.7.0") || !strings.Contains(reply, "authenticate again") {
			t.Errorf("reply = %q", reply)
		}
	})
	t.Run("revoked app token", func(t *testing.T) {
		rev := &revocations{revoked: map[string]bool{}}
		e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) {
			gc.Passwords = appTokens{"secret-1": {owner: "alice@example.com",
				id: gateway.Identity{Subject: "apptoken:t1", Addresses: []string{"alice@example.com"}, AppTokenID: "t1"}}}
			gc.Credentials = rev
		})
		c := e.dialStartTLS(t)
		c.auth("PLAIN", []byte("\x00alice@example.com\x00secret-1"), 235)
		c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
		rev.mu.Lock()
		rev.revoked["t1"] = true
		rev.mu.Unlock()
		c.cmd("MAIL FROM:<alice@example.com>", 421)
		if !c.closed() {
			t.Error("connection still open")
		}
	})
}

func TestSecretUserNameRedacted(t *testing.T) {
	e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.Passwords = appTokens{} })
	c := e.dialStartTLS(t)
	secret := "smtpgate_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
	c.auth("PLAIN", []byte("\x00"+secret+"\x00alice@example.com"), 535)
	c.cmd("AUTH LOGIN", 334)
	c.cmd(base64.StdEncoding.EncodeToString([]byte(secret)), 334)
	c.cmd(base64.StdEncoding.EncodeToString([]byte("alice@example.com")), 535)
	if strings.Contains(e.logs.String(), secret) {
		t.Error("the log holds an app token given as the user name")
	}
	if !strings.Contains(e.logs.String(), "REDACTED") {
		t.Error("the log does not say a user name was redacted")
	}
}

// A scriptedUpstream is an SMTP peer that answers each command from a
// script, to play an upstream that is out of step or silent.
type scriptedUpstream struct {
	addr string
}

func newScriptedUpstream(t *testing.T, greet bool, answer func(cmd string) (reply string, ok bool)) *scriptedUpstream {
	t.Helper()
	l := listen(t)
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(20 * time.Second))
				if greet {
					io.WriteString(conn, "220 scripted.test ESMTP\r\n")
				}
				br := bufio.NewReader(conn)
				inData := false
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					if inData {
						if line != "." {
							continue
						}
						inData = false
					}
					reply, ok := answer(line)
					if !ok {
						io.Copy(io.Discard, br) // silent
						return
					}
					if reply == "354" {
						inData = true
					}
					io.WriteString(conn, reply+" scripted\r\n")
				}
			})
		}
	})
	return &scriptedUpstream{addr: l.Addr().String()}
}

func standardAnswer(cmd string) string {
	switch {
	case strings.HasPrefix(cmd, "EHLO"):
		return "250"
	case strings.HasPrefix(cmd, "DATA"):
		return "354"
	case strings.HasPrefix(cmd, "QUIT"):
		return "221"
	}
	return "250"
}

func TestUpstreamOutOfStep(t *testing.T) {
	for _, tc := range []struct {
		name  string
		wrong func(cmd string) (string, bool)
		at    string
	}{
		{"250 to DATA", func(cmd string) (string, bool) {
			if cmd == "DATA" {
				return "250", true
			}
			return standardAnswer(cmd), true
		}, "DATA"},
		{"354 to RCPT", func(cmd string) (string, bool) {
			if strings.HasPrefix(cmd, "RCPT") {
				return "354", true
			}
			return standardAnswer(cmd), true
		}, "RCPT"},
		{"421 to RCPT", func(cmd string) (string, bool) {
			if strings.HasPrefix(cmd, "RCPT") {
				return "421", true
			}
			return standardAnswer(cmd), true
		}, "RCPT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newScriptedUpstream(t, true, tc.wrong)
			e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.Upstream.Addr = up.addr })
			c := e.dialAuth(t, e.token(nil))
			c.cmd("MAIL FROM:<alice@example.com>", 250)
			if tc.at == "RCPT" {
				if reply := c.cmd("RCPT TO:<bob@example.org>", 451); !strings.HasPrefix(reply, "4.4.2") {
					t.Errorf("RCPT reply = %q, want 451 4.4.2", reply)
				}
				return
			}
			c.cmd("RCPT TO:<bob@example.org>", 250)
			c.cmd("DATA", 354)
			if reply := c.data(testMessage, 451); !strings.HasPrefix(reply, "4.4.2") {
				t.Errorf("DATA reply = %q, want 451 4.4.2", reply)
			}
		})
	}
}

// TestUpstreamSilent bounds connect, greeting, EHLO and STARTTLS by the
// dial timeout: go-smtp's client waited its own 5 minutes for each.
func TestUpstreamSilent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		greet  bool
		answer func(string) (string, bool)
	}{
		{"no greeting", false, func(string) (string, bool) { return "", false }},
		{"silent after STARTTLS", true, func(cmd string) (string, bool) {
			if cmd == "STARTTLS" {
				return "", false
			}
			return "250", true
		}},
		{"silent after EHLO", true, func(string) (string, bool) { return "", false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newScriptedUpstream(t, tc.greet, tc.answer)
			e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) {
				gc.Upstream.Addr = up.addr
				gc.Upstream.TLS = gateway.UpstreamTLSStartTLS
				gc.Upstream.TLSConfig = &tls.Config{ServerName: "localhost"}
				gc.Upstream.DialTimeout = 500 * time.Millisecond
			})
			c := e.dialAuth(t, e.token(nil))
			start := time.Now()
			if reply := c.cmd("MAIL FROM:<alice@example.com>", 451); !strings.HasPrefix(reply, "4.4.1") {
				t.Errorf("reply = %q, want 4.4.1", reply)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("MAIL took %v with a 500ms dial timeout", d)
			}
		})
	}
}

// TestPooledConnection421 redials once when a pooled connection answers
// MAIL with 421, as Postfix does to idle clients under stress.
func TestPooledConnection421(t *testing.T) {
	var mu sync.Mutex
	mails := map[string]int{} // per connection, by the EHLO count seen
	conns := 0
	up := newScriptedUpstream(t, true, func(cmd string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			conns++
			return "250", true
		case strings.HasPrefix(cmd, "MAIL"):
			key := fmt.Sprint(conns)
			mails[key]++
			if conns == 1 && mails[key] == 2 {
				return "421", true
			}
		}
		return standardAnswer(cmd), true
	})
	e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.Upstream.Addr = up.addr })
	c := e.dialAuth(t, e.token(nil))
	c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
	c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
	mu.Lock()
	defer mu.Unlock()
	if conns != 2 {
		t.Errorf("upstream saw %d connections, want 2 (one redial)", conns)
	}
}

// TestShutdownBounded: a client stuck in a TLS handshake does not hold up
// Shutdown, and a session waiting on a silent upstream does not hold up
// Close.
func TestShutdownBounded(t *testing.T) {
	t.Run("handshake", func(t *testing.T) {
		e := newTestEnv(t)
		conn, err := net.Dial("tcp", e.tlsAddr) // and never a ClientHello
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		idle := e.dialAuth(t, e.token(nil))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		if err := e.gw.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Shutdown took %v", d)
		}
		idle.expect(421)
	})
	t.Run("silent upstream", func(t *testing.T) {
		up := newScriptedUpstream(t, true, func(cmd string) (string, bool) {
			if cmd == "." {
				return "", false // never answers the final dot
			}
			return standardAnswer(cmd), true
		})
		e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.Upstream.Addr = up.addr })
		c := e.dialAuth(t, e.token(nil))
		c.cmd("MAIL FROM:<alice@example.com>", 250)
		c.cmd("RCPT TO:<bob@example.org>", 250)
		c.cmd("DATA", 354)
		w := c.tp.DotWriter()
		io.WriteString(w, testMessage)
		w.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := e.gw.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want the context's deadline", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Shutdown took %v with a 500ms context", d)
		}
		code, _, err := c.readReply(5 * time.Second)
		if err == nil && code == 250 {
			t.Errorf("client got 250 for a message the upstream never accepted")
		}
	})
}

// newRawClientNoGreeting wraps conn without reading the greeting.
func newRawClientNoGreeting(t *testing.T, conn net.Conn) *rawClient {
	t.Helper()
	c := &rawClient{t: t, conn: conn}
	c.tp = textproto.NewConn(conn)
	return c
}
