package gateway_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/gateway"
	"github.com/smtpgate/smtpgate/oidc"
)

func TestSubmitMechanisms(t *testing.T) {
	e := newTestEnv(t)
	tok := e.token(nil)
	tests := []struct {
		name string
		run  func(c *rawClient)
	}{
		{"OAUTHBEARER inline", func(c *rawClient) { c.auth("OAUTHBEARER", oauthbearer("alice@example.com", tok), 235) }},
		{"OAUTHBEARER no authzid", func(c *rawClient) { c.auth("OAUTHBEARER", oauthbearer("", tok), 235) }},
		{"OAUTHBEARER after 334", func(c *rawClient) {
			if got := c.cmd("AUTH OAUTHBEARER", 334); got != "" {
				t.Errorf("challenge = %q, want empty", got)
			}
			c.cmd(base64.StdEncoding.EncodeToString(oauthbearer("alice@example.com", tok)), 235)
		}},
		{"XOAUTH2 inline", func(c *rawClient) { c.auth("XOAUTH2", xoauth2("alice@example.com", tok), 235) }},
		{"XOAUTH2 after 334", func(c *rawClient) {
			c.cmd("AUTH XOAUTH2", 334)
			c.cmd(base64.StdEncoding.EncodeToString(xoauth2("ALICE@example.com", tok)), 235)
		}},
		{"lower-case mechanism and scheme", func(c *rawClient) {
			c.auth("xoauth2", []byte("user=alice@example.com\x01auth=bearer "+tok+"\x01\x01"), 235)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dialStartTLS(t)
			tc.run(c)
			reply := c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
			if !strings.Contains(reply, "TESTQ1") {
				t.Errorf("DATA reply = %q, want the upstream's queue ID", reply)
			}
			c.cmd("QUIT", 221)
		})
	}
	msgs := e.up.messages()
	if len(msgs) != len(tests) {
		t.Fatalf("upstream got %d messages, want %d", len(msgs), len(tests))
	}
	m := msgs[0]
	if m.from != "alice@example.com" || len(m.to) != 1 || m.to[0] != "bob@example.org" {
		t.Errorf("envelope = %q %q", m.from, m.to)
	}
	received, rest, _ := strings.Cut(string(m.data), "\r\nFrom: ")
	if !strings.HasPrefix(received, "Received: from client.test ([127.0.0.1])\r\n\tby gw.test (smtpgate) with ESMTPSA id ") {
		t.Errorf("message starts %q, want our Received header", received)
	}
	if "From: "+rest != testMessage {
		t.Errorf("message after Received = %q, want %q", "From: "+rest, testMessage)
	}
	if strings.Contains(e.logs.String(), tok) {
		t.Error("the log contains the token")
	}
}

func TestImplicitTLS(t *testing.T) {
	e := newTestEnv(t)
	c := e.dialTLS(t)
	ehlo := c.cmd("EHLO client.test", 250)
	if strings.Contains(ehlo, "STARTTLS") || !strings.Contains(ehlo, "AUTH OAUTHBEARER XOAUTH2") {
		t.Errorf("EHLO over TLS = %q, want AUTH and no STARTTLS", ehlo)
	}
	c.auth("OAUTHBEARER", oauthbearer("", e.token(nil)), 235)
	c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
	if n := len(e.up.messages()); n != 1 {
		t.Errorf("upstream got %d messages, want 1", n)
	}
}

func TestTLSRules(t *testing.T) {
	e := newTestEnv(t)
	c := e.dial(t)
	ehlo := c.cmd("EHLO client.test", 250)
	if strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO before TLS = %q, want STARTTLS and no AUTH", ehlo)
	}
	c.auth("OAUTHBEARER", oauthbearer("", e.token(nil)), 538)
	c.cmd("AUTH XOAUTH2", 538)
	c.cmd("MAIL FROM:<alice@example.com>", 530)

	// Commands pipelined in plaintext after STARTTLS are discarded with
	// the rest of the plaintext state (RFC 3207 section 4.2).
	c.tp.PrintfLine("STARTTLS\r\nMAIL FROM:<alice@example.com>")
	c.expect(220)
	c2 := e.dialStartTLS(t)
	if ehlo := c2.cmd("EHLO again.test", 250); !strings.Contains(ehlo, "AUTH OAUTHBEARER XOAUTH2") {
		t.Errorf("EHLO after STARTTLS = %q, want AUTH", ehlo)
	}
	c2.cmd("MAIL FROM:<alice@example.com>", 530)
	c2.cmd("RCPT TO:<bob@example.org>", 530) // RFC 4954 section 6: AUTH first
}

func TestTLS12Minimum(t *testing.T) {
	e := newTestEnv(t)
	cfg := e.clientTLS.Clone()
	cfg.MaxVersion = 0x0302 // TLS 1.1
	if conn, err := tlsDial(e.tlsAddr, cfg); err == nil {
		conn.Close()
		t.Fatal("TLS 1.1 handshake succeeded, want failure")
	}
}

func TestAuthProtocolErrors(t *testing.T) {
	e := newTestEnv(t)
	tok := e.token(nil)
	c := e.dialStartTLS(t)
	c.cmd("AUTH CRAM-MD5", 504)
	c.cmd("AUTH PLAIN", 504) // no app tokens configured
	c.cmd("AUTH OAUTHBEARER", 334)
	c.cmd("*", 501)
	c.auth("OAUTHBEARER", []byte("garbage"), 501)
	c.auth("OAUTHBEARER", []byte("p=tls-unique,,\x01auth=Bearer x\x01\x01"), 501)
	c.auth("OAUTHBEARER", oauthbearer("", "not-a-token"), 334)
	c.cmd("AQ==", 535)
	// Three failures (a cancel is not one): the next AUTH gets 421.
	c.cmd("AUTH OAUTHBEARER "+base64.StdEncoding.EncodeToString(oauthbearer("", tok)), 421)
	if !c.closed() {
		t.Error("connection still open after 421")
	}

	c = e.dialAuth(t, tok)
	c.auth("XOAUTH2", xoauth2("", tok), 503)
}

// TestFailureRoundTrip covers the RFC 7628 error exchange and every answer
// real clients send to the error challenge.
func TestFailureRoundTrip(t *testing.T) {
	e := newTestEnv(t, func(_ *gateway.Config, vc *oidc.Config) {
		vc.Issuers[0].RequiredScopes = []string{"smtp.send"}
	})
	answers := []struct {
		name, line string
		want       int
	}{
		{"AQ==", "AQ==", 535},
		{"empty line", "", 535},
		{"=", "=", 535},
		{"cancel", "*", 501},
	}
	for _, mech := range []string{"OAUTHBEARER", "XOAUTH2"} {
		for _, a := range answers {
			t.Run(mech+"/"+a.name, func(t *testing.T) {
				c := e.dialStartTLS(t)
				var ir []byte
				if mech == "XOAUTH2" {
					ir = xoauth2("alice@example.com", e.token(nil))
				} else {
					ir = oauthbearer("alice@example.com", e.token(nil))
				}
				challenge := c.auth(mech, ir, 334)
				var got map[string]string
				raw, err := base64.StdEncoding.DecodeString(challenge)
				if err != nil || json.Unmarshal(raw, &got) != nil {
					t.Fatalf("challenge %q is not base64 JSON", challenge)
				}
				if mech == "XOAUTH2" {
					if got["status"] != "403" || got["schemes"] != "bearer" || got["scope"] != "smtp.send" {
						t.Errorf("XOAUTH2 challenge = %v", got)
					}
				} else if got["status"] != "insufficient_scope" || got["scope"] != "smtp.send" || got["openid-configuration"] != e.iss.DiscoveryURL() {
					t.Errorf("OAUTHBEARER challenge = %v, want insufficient_scope, smtp.send, %s", got, e.iss.DiscoveryURL())
				}
				c.cmd(a.line, a.want)
				// Thunderbird's Retry: a new token on the same connection.
				c.auth(mech, bytes.Replace(ir, []byte(e.token(nil)), []byte(e.token(map[string]any{"scope": "openid smtp.send"})), 1), 235)
			})
		}
	}
}

func TestTokenRejections(t *testing.T) {
	e := newTestEnv(t, func(_ *gateway.Config, vc *oidc.Config) { vc.Leeway = time.Second })
	now := time.Now()
	good := e.token(nil)
	parts := strings.Split(good, ".")
	tests := []struct {
		name   string
		token  string
		status string
	}{
		{"expired", e.token(map[string]any{"exp": now.Add(-time.Minute).Unix()}), "invalid_token"},
		{"not yet valid", e.token(map[string]any{"nbf": now.Add(time.Hour).Unix()}), "invalid_token"},
		{"issued in the future", e.token(map[string]any{"iat": now.Add(time.Hour).Unix()}), "invalid_token"},
		{"wrong issuer", e.token(map[string]any{"iss": "https://evil.example.com"}), "invalid_token"},
		{"wrong audience", e.token(map[string]any{"aud": "other"}), "invalid_token"},
		{"bad signature", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"x"}`)) + "." + parts[2], "invalid_token"},
		{"alg none", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"k1"}`)) + "." + parts[1] + ".", "invalid_token"},
		{"HMAC with the public key", hmacToken(t, e, parts[1]), "invalid_token"},
		{"unknown kid", e.iss.Sign(t, "", map[string]any{"kid": "nope"}, nil), "invalid_token"},
		{"garbage", "not-a-jwt", "invalid_token"},
		{"email not verified", e.token(map[string]any{"email_verified": false}), "invalid_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dialStartTLS(t)
			challenge := c.auth("OAUTHBEARER", oauthbearer("", tc.token), 334)
			raw, _ := base64.StdEncoding.DecodeString(challenge)
			var got map[string]string
			json.Unmarshal(raw, &got)
			if got["status"] != tc.status {
				t.Errorf("status = %q, want %q (challenge %s)", got["status"], tc.status, raw)
			}
			c.cmd("AQ==", 535)
			c.cmd("MAIL FROM:<alice@example.com>", 530)
		})
	}
	if n := len(e.up.messages()); n != 0 {
		t.Errorf("upstream got %d messages, want none", n)
	}
}

func TestLargeTokenInline(t *testing.T) {
	e := newTestEnv(t)
	// 12 KiB is RFC 4954's floor for a SASL response; the issue asks for
	// AUTH lines of at least 32 KiB (Entra tokens with many groups).
	for _, size := range []int{12 << 10, 23 << 10} {
		tok := e.token(map[string]any{"groups": strings.Repeat("g", size)})
		if len(tok) < size {
			t.Fatalf("token is %d bytes, want at least %d", len(tok), size)
		}
		ir := xoauth2("alice@example.com", tok)
		if line := len("AUTH XOAUTH2 ") + base64.StdEncoding.EncodedLen(len(ir)); size > 20<<10 && line < 32<<10 {
			t.Fatalf("AUTH line is %d bytes, want at least 32 KiB", line)
		}
		c := e.dialStartTLS(t)
		c.auth("XOAUTH2", ir, 235)
		c = e.dialStartTLS(t)
		c.auth("OAUTHBEARER", oauthbearer("alice@example.com", tok), 235)
	}
}

func TestAuthzid(t *testing.T) {
	e := newTestEnv(t)
	tok := e.token(map[string]any{"aliases": []string{"sales@example.com"}})
	c := e.dialStartTLS(t)
	c.auth("XOAUTH2", xoauth2("mallory@example.com", tok), 535)
	c.auth("OAUTHBEARER", oauthbearer("mallory@example.com", tok), 535)
	// A client may retry with another identity; an alias counts, and
	// a=/user= compare case-insensitively.
	c.auth("OAUTHBEARER", oauthbearer("Sales@Example.com", tok), 235)
	c.send("sales@example.com", []string{"bob@example.org"}, strings.Replace(testMessage, "alice@", "sales@", 1))
}

func TestSenderPolicy(t *testing.T) {
	e := newTestEnv(t)
	tok := e.token(map[string]any{"aliases": "team@example.com"})
	tests := []struct {
		name     string
		from     string
		header   string
		mailCode int
		dataCode int
	}{
		{"own address", "alice@example.com", "From: alice@example.com\r\n", 250, 250},
		{"alias, other case", "TEAM@example.com", "From: Team <Team@Example.COM>\r\n", 250, 250},
		{"envelope not allowed", "bob@example.com", "", 550, 0},
		{"null sender", "", "", 550, 0},
		{"header From not allowed", "alice@example.com", "From: Bob <bob@example.com>\r\n", 250, 550},
		{"second From address not allowed", "alice@example.com", "From: alice@example.com, bob@example.com\r\nSender: alice@example.com\r\n", 250, 550},
		{"second From field", "alice@example.com", "From: alice@example.com\r\nFrom: bob@example.com\r\n", 250, 550},
		{"Sender not allowed", "alice@example.com", "From: alice@example.com\r\nSender: bob@example.com\r\n", 250, 550},
		{"From hidden behind bare LF", "alice@example.com", "X-A: 1\nFrom: bob@example.com\r\n", 250, 550},
		{"From hidden behind bare CR", "alice@example.com", "X-A: 1\rFrom: bob@example.com\r\n", 250, 550},
		{"obsolete blank before colon", "alice@example.com", "From : bob@example.com\r\n", 250, 550},
		{"folded From", "alice@example.com", "From: Alice\r\n <bob@example.com>\r\n", 250, 550},
		{"unparseable From", "alice@example.com", "From: <<<\r\n", 250, 550},
		{"encoded display name", "alice@example.com", "From: =?windows-1252?Q?J=F6rg?= <alice@example.com>\r\n", 250, 250},
		{"no From", "alice@example.com", "Subject: x\r\n", 250, 550},
		{"Resent-From not allowed", "alice@example.com", "From: alice@example.com\r\nResent-From: bob@example.com\r\n", 250, 550},
		{"odd field elsewhere", "alice@example.com", "From: alice@example.com\r\nX(a) b: \x1b$B$3\x1b(B\r\n", 250, 250},
	}
	want := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dialAuth(t, tok)
			c.cmd("MAIL FROM:<"+tc.from+">", tc.mailCode)
			if tc.mailCode != 250 {
				return
			}
			c.cmd("RCPT TO:<bob@example.org>", 250)
			c.cmd("DATA", 354)
			reply := c.data(tc.header+"To: bob@example.org\r\n\r\nbody\r\n", tc.dataCode)
			if tc.dataCode == 550 && !strings.HasPrefix(reply, "5.") {
				t.Errorf("reply %q has no enhanced code", reply)
			}
			if tc.dataCode == 250 {
				want++
			}
			// The connection stays usable after a refusal.
			c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
			want++
		})
	}
	if got := len(e.up.messages()); got != want {
		t.Errorf("upstream got %d messages, want %d", got, want)
	}
}

func TestUpstreamDown(t *testing.T) {
	e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) {
		l := listen(t)
		gc.Upstream.Addr = l.Addr().String()
		l.Close()
	})
	c := e.dialAuth(t, e.token(nil))
	if reply := c.cmd("MAIL FROM:<alice@example.com>", 451); !strings.HasPrefix(reply, "4.4.1") {
		t.Errorf("reply = %q, want 4.4.1", reply)
	}
}

func TestUpstreamRejectsOneRecipient(t *testing.T) {
	e := newTestEnv(t)
	c := e.dialAuth(t, e.token(nil))
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	if reply := c.cmd("RCPT TO:<reject@example.org>", 550); reply != "5.1.1 No such user here" {
		t.Errorf("RCPT reply = %q, want the upstream's", reply)
	}
	c.cmd("RCPT TO:<carol@example.org>", 250)
	c.cmd("DATA", 354)
	c.data(testMessage, 250)
	msgs := e.up.messages()
	if len(msgs) != 1 || strings.Join(msgs[0].to, ",") != "bob@example.org,carol@example.org" {
		t.Fatalf("upstream got %+v, want one message to bob and carol", msgs)
	}
	if strings.Contains(string(msgs[0].data), "\tfor <") {
		t.Error("Received header names a recipient of a multi-recipient message")
	}
}

func TestUpstreamDropsMidData(t *testing.T) {
	e := newTestEnv(t)
	e.up.mu.Lock()
	e.up.dropData = true
	e.up.mu.Unlock()
	c := e.dialAuth(t, e.token(nil))
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	big := testMessage + strings.Repeat(strings.Repeat("x", 998)+"\r\n", 1000)
	if reply := c.data(big, 451); !strings.HasPrefix(reply, "4.4.2") {
		t.Errorf("reply = %q, want 4.4.2", reply)
	}
	// The next message goes through on a new upstream connection.
	e.up.mu.Lock()
	e.up.dropData = false
	e.up.mu.Unlock()
	c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
	if n := len(e.up.messages()); n != 1 {
		t.Errorf("upstream got %d messages, want 1", n)
	}
}

func TestPooledConnectionReplaced(t *testing.T) {
	e := newTestEnv(t)
	c := e.dialAuth(t, e.token(nil))
	c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
	c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
	e.up.mu.Lock()
	sessions := e.up.sessions
	e.up.mu.Unlock()
	if sessions != 1 {
		t.Errorf("upstream saw %d connections for two messages, want 1 (reuse)", sessions)
	}
	e.up.dropConnections()
	c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
	if n := len(e.up.messages()); n != 3 {
		t.Errorf("upstream got %d messages, want 3", n)
	}
}

func TestMessageSize(t *testing.T) {
	e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) {
		gc.MaxMessageBytes = 64 << 10
		gc.MaxHeaderBytes = 4 << 10
	})
	c := e.dialAuth(t, e.token(nil))
	if ehlo := c.cmd("EHLO client.test", 250); !strings.Contains(ehlo, "SIZE 65536") {
		t.Errorf("EHLO = %q, want SIZE 65536", ehlo)
	}
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	c.data(testMessage+strings.Repeat("0123456789\r\n", 8<<10), 552)
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	c.data("X-Big: "+strings.Repeat("y", 5<<10)+"\r\n"+testMessage, 552)
	c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
	if n := len(e.up.messages()); n != 1 {
		t.Errorf("upstream got %d messages, want only the last", n)
	}
}

// TestSmuggling sends the CVE-2023-51764 class of end-of-data sequences: a
// lone LF or CR around the dot must neither end the message at the
// upstream nor start a second one.
func TestSmuggling(t *testing.T) {
	e := newTestEnv(t)
	c := e.dialAuth(t, e.token(nil))
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	for _, end := range []string{"\n.\n", "\r.\r", "\n.\r\n", "\r\n.\r"} {
		c.conn.Write([]byte("From: alice@example.com\r\n\r\nbody" + end + "MAIL FROM:<ceo@example.com>\r\n.\r\n"))
		c.expect(250)
		c.cmd("MAIL FROM:<alice@example.com>", 250)
		c.cmd("RCPT TO:<bob@example.org>", 250)
		c.cmd("DATA", 354)
	}
	c.data("From: alice@example.com\r\n\r\nlast\r\n", 250)
	msgs := e.up.messages()
	if len(msgs) != 5 {
		t.Fatalf("upstream got %d messages, want 5", len(msgs))
	}
	for _, m := range msgs {
		if m.from != "alice@example.com" {
			t.Errorf("upstream got a message from %q", m.from)
		}
		d := string(m.data)
		if strings.Contains(strings.ReplaceAll(d, "\r\n", ""), "\r") || strings.Contains(strings.ReplaceAll(d, "\r\n", ""), "\n") {
			t.Errorf("upstream got a bare CR or LF: %q", d)
		}
	}
	if !strings.Contains(string(msgs[0].data), "body\r\n.\r\nMAIL FROM:<ceo@example.com>\r\n") {
		t.Errorf("first message = %q, want the lone dot line kept inside the body", msgs[0].data)
	}
}

func TestKeyRotation(t *testing.T) {
	e := newTestEnv(t, func(_ *gateway.Config, vc *oidc.Config) { vc.MinKeyRefresh = time.Nanosecond })
	c := e.dialStartTLS(t)
	c.auth("OAUTHBEARER", oauthbearer("", e.token(nil)), 235)
	e.iss.Rotate(t)
	c = e.dialStartTLS(t)
	c.auth("OAUTHBEARER", oauthbearer("", e.token(nil)), 235)
}

func TestIdPDown(t *testing.T) {
	t.Run("cached keys", func(t *testing.T) {
		e := newTestEnv(t)
		c := e.dialStartTLS(t)
		c.auth("OAUTHBEARER", oauthbearer("", e.token(nil)), 235)
		e.iss.SetDown(true)
		c = e.dialStartTLS(t)
		c.auth("OAUTHBEARER", oauthbearer("", e.token(map[string]any{"sub": "alice2"})), 235)
	})
	t.Run("no keys", func(t *testing.T) {
		e := newTestEnv(t)
		e.iss.SetDown(true)
		c := e.dialStartTLS(t)
		if reply := c.auth("OAUTHBEARER", oauthbearer("", e.token(nil)), 454); !strings.HasPrefix(reply, "4.7.0") {
			t.Errorf("reply = %q, want 4.7.0", reply)
		}
		// Unavailability is not the client's fault: it does not count.
		c.auth("OAUTHBEARER", oauthbearer("", e.token(nil)), 454)
		c.auth("OAUTHBEARER", oauthbearer("", e.token(nil)), 454)
		c.auth("OAUTHBEARER", oauthbearer("", e.token(nil)), 454)
	})
}

func TestShutdown(t *testing.T) {
	e := newTestEnv(t)
	idle := e.dialAuth(t, e.token(nil))
	busy := e.dialAuth(t, e.token(nil))
	busy.cmd("MAIL FROM:<alice@example.com>", 250)
	busy.cmd("RCPT TO:<bob@example.org>", 250)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- e.gw.Shutdown(ctx)
	}()
	idle.expect(421)
	busy.cmd("DATA", 354)
	busy.data(testMessage, 250)
	if !busy.closed() {
		t.Error("busy connection still open after its transaction")
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
	if n := len(e.up.messages()); n != 1 {
		t.Errorf("upstream got %d messages, want 1", n)
	}
}

func TestAppTokens(t *testing.T) {
	tokens := appTokens{
		"smtpgate_secret1": {"alice@example.com", gateway.Identity{Subject: "apptoken:1", Addresses: []string{"alice@example.com"}}},
	}
	e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.Passwords = tokens })
	plain := func(authzid, user, pass string) []byte { return []byte(authzid + "\x00" + user + "\x00" + pass) }
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name string
		run  func(c *rawClient)
	}{
		{"PLAIN inline", func(c *rawClient) { c.auth("PLAIN", plain("", "alice@example.com", "smtpgate_secret1"), 235) }},
		{"PLAIN after 334", func(c *rawClient) {
			c.cmd("AUTH PLAIN", 334)
			c.cmd(base64.StdEncoding.EncodeToString(plain("alice@example.com", "Alice@Example.com", "smtpgate_secret1")), 235)
		}},
		{"LOGIN", func(c *rawClient) {
			if got := c.cmd("AUTH LOGIN", 334); got != b64("Username:") {
				t.Errorf("LOGIN challenge = %q", got)
			}
			c.cmd(b64("alice@example.com"), 334)
			c.cmd(b64("smtpgate_secret1"), 235)
		}},
		{"LOGIN username inline", func(c *rawClient) {
			c.cmd("AUTH LOGIN "+b64("alice@example.com"), 334)
			c.cmd(b64("smtpgate_secret1"), 235)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dialStartTLS(t)
			tc.run(c)
			c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
		})
	}
	t.Run("refused", func(t *testing.T) {
		c := e.dialStartTLS(t)
		if ehlo := c.cmd("EHLO client.test", 250); !strings.Contains(ehlo, "AUTH OAUTHBEARER XOAUTH2 PLAIN LOGIN") {
			t.Errorf("EHLO = %q, want PLAIN and LOGIN offered", ehlo)
		}
		c.auth("PLAIN", plain("", "alice@example.com", "wrong"), 535)
		c.auth("PLAIN", plain("", "bob@example.com", "smtpgate_secret1"), 535)
		c.auth("PLAIN", []byte("no nuls"), 501)
		c.auth("PLAIN", plain("", "alice@example.com", "smtpgate_secret1"), 421) // three failures: the connection is done
	})
	t.Run("authzid", func(t *testing.T) {
		c := e.dialStartTLS(t)
		c.auth("PLAIN", plain("boss@example.com", "alice@example.com", "smtpgate_secret1"), 535)
	})
	if strings.Contains(e.logs.String(), "smtpgate_secret1") {
		t.Error("the log contains an app token")
	}
}

func TestUpstreamAuth(t *testing.T) {
	e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) {
		gc.Upstream.Username, gc.Upstream.Password = "relay", "s3cret"
	})
	c := e.dialAuth(t, e.token(nil))
	c.send("alice@example.com", []string{"bob@example.org"}, testMessage)

	bad := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) {
		gc.Upstream.Username, gc.Upstream.Password = "relay", "wrong"
	})
	bad.up.mu.Lock()
	bad.up.password = "s3cret"
	bad.up.mu.Unlock()
	c = bad.dialAuth(t, bad.token(nil))
	c.cmd("MAIL FROM:<alice@example.com>", 451)
}

// TestAuthFailureDelay checks that an address that keeps failing is
// answered more and more slowly, across connections. Only lower bounds are
// checked: a busy machine can only make it slower.
func TestAuthFailureDelay(t *testing.T) {
	const step = 50 * time.Millisecond
	e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.AuthFailureDelay = step })
	bad := xoauth2("", "not-a-token")
	for range 3 {
		c := e.dialStartTLS(t)
		c.auth("XOAUTH2", bad, 334)
		c.cmd("", 535)
	}
	c := e.dialStartTLS(t)
	start := time.Now()
	c.auth("XOAUTH2", bad, 334)
	if d := time.Since(start); d < step {
		t.Errorf("4th failure answered after %v, want at least %v", d, step)
	}
	c.cmd("", 535)
	start = time.Now()
	c.auth("XOAUTH2", bad, 334)
	if d := time.Since(start); d < 2*step {
		t.Errorf("5th failure answered after %v, want at least %v", d, 2*step)
	}
}

// TestNestedMail: a second MAIL inside a transaction is refused (RFC 5321
// section 3.3) and holds no second upstream connection: with room for one,
// the next transaction still gets it.
func TestNestedMail(t *testing.T) {
	e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) { gc.Upstream.MaxConns = 1 })
	c := e.dialAuth(t, e.token(nil))
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	c.cmd("MAIL FROM:<alice@example.com>", 503)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	c.data(testMessage, 250)
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	c.cmd("RSET", 250)
	c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
	if n := len(e.up.messages()); n != 2 {
		t.Errorf("upstream got %d messages, want 2", n)
	}
}

// TestUpstreamBusy: with every upstream connection in use, MAIL waits at
// most dial_timeout and then gets 451, and works again once one is free.
func TestUpstreamBusy(t *testing.T) {
	e := newTestEnv(t, func(gc *gateway.Config, _ *oidc.Config) {
		gc.Upstream.MaxConns, gc.Upstream.DialTimeout = 1, 100*time.Millisecond
	})
	busy := e.dialAuth(t, e.token(nil))
	busy.cmd("MAIL FROM:<alice@example.com>", 250)
	c := e.dialAuth(t, e.token(nil))
	if reply := c.cmd("MAIL FROM:<alice@example.com>", 451); !strings.HasPrefix(reply, "4.4.1") {
		t.Errorf("reply = %q, want 4.4.1", reply)
	}
	busy.cmd("RSET", 250)
	c.send("alice@example.com", []string{"bob@example.org"}, testMessage)
}

// TestCloseDuringTransaction closes the server while a client pipelines
// RCPTs: go-smtp then calls Logout from Close's goroutine while Rcpt runs
// on the connection's, which the race detector checks; nothing may be
// delivered.
func TestCloseDuringTransaction(t *testing.T) {
	e := newTestEnv(t)
	c := e.dialAuth(t, e.token(nil))
	c.cmd("MAIL FROM:<alice@example.com>", 250)
	go func() {
		for range 500 {
			if c.tp.PrintfLine("RCPT TO:<bob@example.org>") != nil {
				return
			}
		}
	}()
	c.expect(250) // the gateway is busy with the RCPTs
	if err := e.gw.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	// Replies already sent are still buffered: read past them.
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var err error
	for n := 0; err == nil && n < 1000; n++ {
		_, err = c.tp.ReadLine()
	}
	if ne, ok := err.(interface{ Timeout() bool }); err == nil || ok && ne.Timeout() {
		t.Errorf("connection still open after Close (%v)", err)
	}
	if n := len(e.up.messages()); n != 0 {
		t.Errorf("upstream got %d messages, want 0", n)
	}
}
