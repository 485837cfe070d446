package gateway_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/smtpgate/smtpgate/gateway"
	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

// A testEnv is the gateway between a real OpenID issuer and a recording
// upstream MTA, all on loopback.
type testEnv struct {
	t         *testing.T
	iss       *testissuer.Issuer
	verifier  *oidc.Verifier
	up        *sink
	gw        *gateway.Server
	addr      string // submission, STARTTLS
	tlsAddr   string // submissions, implicit TLS
	clientTLS *tls.Config
	cert      tls.Certificate
	logs      *syncBuffer
}

type envOption func(*gateway.Config, *oidc.Config)

func newTestEnv(t *testing.T, opts ...envOption) *testEnv {
	t.Helper()
	up, logs := newSink(t), &syncBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The sink wants the password the gateway is configured with.
	opts = append(opts, func(gc *gateway.Config, _ *oidc.Config) {
		up.mu.Lock()
		up.password = gc.Upstream.Password
		up.mu.Unlock()
	})
	e := startGateway(t, up.addr, log, opts...)
	e.t, e.up, e.logs = t, up, logs
	return e
}

// startGateway runs a gateway that trusts a new test issuer and relays to
// upstream, on both listeners, until the test ends. The benchmarks use it
// with their own upstream.
func startGateway(tb testing.TB, upstream string, log *slog.Logger, opts ...envOption) *testEnv {
	tb.Helper()
	e := &testEnv{iss: testissuer.New(tb)}
	cert, pool := testCert(tb)
	e.cert = cert
	e.clientTLS = &tls.Config{RootCAs: pool, ServerName: "localhost"}
	vc := oidc.Config{
		Issuers: []oidc.IssuerConfig{{Issuer: e.iss.URL, Audiences: []string{testissuer.Audience}, AliasesClaim: "aliases"}},
		Logger:  log,
	}
	gc := gateway.Config{
		Hostname:  "gw.test",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Upstream:  gateway.UpstreamConfig{Addr: upstream, TLS: gateway.UpstreamTLSNone},
		Logger:    log,
		// Every test client comes from 127.0.0.1; TestAuthFailureDelay
		// turns the slowdown on.
		AuthFailureDelay: -1,
	}
	for _, o := range opts {
		o(&gc, &vc)
	}
	v, err := oidc.New(vc)
	if err != nil {
		tb.Fatalf("oidc.New: %v", err)
	}
	e.verifier = v
	if gc.Tokens == nil {
		gc.Tokens = tokenVerifier{v}
	}
	gw, err := gateway.New(gc)
	if err != nil {
		tb.Fatalf("gateway.New: %v", err)
	}
	e.gw = gw
	l1 := listen(tb)
	l2 := listen(tb)
	e.addr, e.tlsAddr = l1.Addr().String(), l2.Addr().String()
	done := make(chan error, 2)
	go func() { done <- gw.Serve(l1) }()
	go func() { done <- gw.ServeTLS(l2) }()
	tb.Cleanup(func() {
		gw.Close()
		for range 2 {
			if err := <-done; err != nil {
				tb.Errorf("Serve returned %v", err)
			}
		}
	})
	return e
}

func listen(tb testing.TB) net.Listener {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// tokenVerifier adapts the real verifier to the gateway's seam, as the
// smtpgate command does.
type tokenVerifier struct{ v *oidc.Verifier }

func (a tokenVerifier) VerifyToken(ctx context.Context, token string) (gateway.Identity, error) {
	id, err := a.v.Verify(ctx, token)
	if oe, ok := errors.AsType[*oidc.Error](err); ok {
		return gateway.Identity{}, &gateway.AuthError{Status: oe.Code, Scope: oe.Scope, Temporary: oe.Temporary,
			Reason: oe.Reason, DiscoveryURL: a.v.DiscoveryURL(token)}
	}
	if err != nil {
		return gateway.Identity{}, err
	}
	return gateway.Identity{Subject: id.Issuer + "#" + id.Subject, Addresses: id.Addresses}, nil
}

// token mints a token for alice@example.com with claims overridden.
func (e *testEnv) token(claims map[string]any) string {
	return e.iss.Token(e.t, claims)
}

// testCert returns a self-signed certificate for localhost and 127.0.0.1,
// and a pool that trusts it.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// A rawClient speaks SMTP line by line, so tests see every reply code.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func (e *testEnv) dial(t *testing.T) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	return newRawClient(t, conn)
}

func (e *testEnv) dialTLS(t *testing.T) *rawClient {
	t.Helper()
	conn, err := tls.Dial("tcp", e.tlsAddr, e.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	return newRawClient(t, conn)
}

func newRawClient(t *testing.T, conn net.Conn) *rawClient {
	t.Helper()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	c := &rawClient{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect(220)
	return c
}

// dialAuth returns a client past STARTTLS, EHLO and a successful AUTH.
func (e *testEnv) dialAuth(t *testing.T, token string) *rawClient {
	t.Helper()
	c := e.dialStartTLS(t)
	c.auth("XOAUTH2", xoauth2("", token), 235)
	return c
}

func (e *testEnv) dialStartTLS(t *testing.T) *rawClient {
	t.Helper()
	c := e.dial(t)
	c.cmd("EHLO client.test", 250)
	c.cmd("STARTTLS", 220)
	tc := tls.Client(c.conn, e.clientTLS)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c.conn, c.tp = tc, textproto.NewConn(tc)
	c.cmd("EHLO client.test", 250)
	return c
}

// cmd sends line and fails the test unless the reply has code want. It
// returns the reply text.
func (c *rawClient) cmd(line string, want int) string {
	c.t.Helper()
	if err := c.tp.PrintfLine("%s", line); err != nil {
		c.t.Fatalf("send %.40q: %v", line, err)
	}
	return c.expect(want)
}

func (c *rawClient) expect(want int) string {
	c.t.Helper()
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil {
		c.t.Fatalf("reading reply (want %d): %v", want, err)
	}
	if code != want {
		c.t.Fatalf("reply = %d %s, want %d", code, msg, want)
	}
	return msg
}

// auth sends AUTH mech with an initial response and expects want.
func (c *rawClient) auth(mech string, ir []byte, want int) string {
	c.t.Helper()
	return c.cmd("AUTH "+mech+" "+base64.StdEncoding.EncodeToString(ir), want)
}

// send runs a whole transaction and returns the final reply.
func (c *rawClient) send(from string, to []string, msg string) string {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+">", 250)
	for _, r := range to {
		c.cmd("RCPT TO:<"+r+">", 250)
	}
	c.cmd("DATA", 354)
	return c.data(msg, 250)
}

// data sends a message body (dot-stuffing it) and expects want.
func (c *rawClient) data(msg string, want int) string {
	c.t.Helper()
	w := c.tp.DotWriter()
	io.WriteString(w, msg)
	if err := w.Close(); err != nil {
		c.t.Fatal(err)
	}
	return c.expect(want)
}

// closed reports whether the server closed the connection, after at most
// a 421 goodbye (RFC 5321 section 3.8).
func (c *rawClient) closed() bool {
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := c.tp.ReadLine()
	if err == nil && strings.HasPrefix(line, "421 ") {
		_, err = c.tp.ReadLine()
	}
	return err != nil
}

func oauthbearer(authzid, token string) []byte {
	gs2 := "n,,"
	if authzid != "" {
		gs2 = "n,a=" + strings.NewReplacer(",", "=2C", "=", "=3D").Replace(authzid) + ","
	}
	return []byte(gs2 + "\x01host=127.0.0.1\x01port=587\x01auth=Bearer " + token + "\x01\x01")
}

func xoauth2(user, token string) []byte {
	return []byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")
}

const testMessage = "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hello\r\nDate: Fri, 27 Nov 2026 15:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello Bob.\r\n"

// A sink is the upstream MTA for tests: a go-smtp server that records what
// it accepts, refuses recipients whose local part starts with "reject",
// and can drop the connection in the middle of DATA.
type sink struct {
	t    *testing.T
	addr string
	srv  *smtp.Server

	mu        sync.Mutex
	msgs      []sinkMsg
	sessions  int
	dropData  bool
	live      map[*smtp.Conn]struct{}
	delivered chan struct{}
	password  string // if set, AUTH PLAIN as "relay" with it is required
}

type sinkMsg struct {
	from string
	to   []string
	data []byte
}

func newSink(t *testing.T) *sink {
	s := &sink{t: t, live: make(map[*smtp.Conn]struct{}), delivered: make(chan struct{}, 100)}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.sessions++
		s.live[c] = struct{}{}
		s.mu.Unlock()
		return &sinkSession{s: s, c: c}, nil
	}))
	s.srv.Domain = "upstream.test"
	s.srv.AllowInsecureAuth = true
	s.srv.ErrorLog = slog.NewLogLogger(slog.NewTextHandler(t.Output(), nil), slog.LevelDebug)
	l := listen(t)
	s.addr = l.Addr().String()
	go s.srv.Serve(l)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func (s *sink) messages() []sinkMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkMsg(nil), s.msgs...)
}

// dropConnections closes every connection the gateway has open to the
// sink, as an MTA does with idle clients.
func (s *sink) dropConnections() {
	s.mu.Lock()
	live := s.live
	s.live = make(map[*smtp.Conn]struct{})
	s.mu.Unlock()
	for c := range live {
		c.Conn().Close()
	}
}

type sinkSession struct {
	s      *sink
	c      *smtp.Conn
	from   string
	to     []string
	authed bool
}

func (ss *sinkSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if ss.s.password != "" && !ss.authed {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *sinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *sinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		ss.s.mu.Lock()
		defer ss.s.mu.Unlock()
		if user != "relay" || pass != ss.s.password {
			return smtp.ErrAuthFailed
		}
		ss.authed = true
		return nil
	}), nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "reject") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	}
	ss.to = append(ss.to, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	ss.s.mu.Lock()
	drop := ss.s.dropData
	ss.s.mu.Unlock()
	if drop {
		io.ReadFull(r, make([]byte, 10))
		ss.c.Conn().Close()
		return errors.New("dropped")
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, sinkMsg{from: ss.from, to: ss.to, data: b})
	ss.s.mu.Unlock()
	ss.s.delivered <- struct{}{}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as TESTQ1"}
}

// A syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func tlsDial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	return tls.Dial("tcp", addr, cfg)
}

// hmacToken forges an HS256 token keyed with the issuer's public key, the
// classic algorithm-confusion attack.
func hmacToken(t *testing.T, e *testEnv, payload string) string {
	t.Helper()
	resp, err := http.Get(e.iss.URL + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	jwks, _ := io.ReadAll(resp.Body)
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"k1"}`))
	mac := hmac.New(sha256.New, jwks)
	mac.Write([]byte(head + "." + payload))
	return head + "." + payload + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// appTokens is a PasswordChecker with fixed app tokens, standing in for the
// store at the gateway's seam; the store's own suite tests the real one.
type appTokens map[string]struct {
	owner string
	id    gateway.Identity
}

func (a appTokens) CheckPassword(_ context.Context, username, password, _ string) (gateway.Identity, error) {
	t, ok := a[password]
	if !ok || !strings.EqualFold(t.owner, username) {
		return gateway.Identity{}, &gateway.AuthError{Reason: "unknown app token"}
	}
	return t.id, nil
}
