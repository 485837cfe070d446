package gateway_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/smtpgate/smtpgate/gateway"
	"github.com/smtpgate/smtpgate/oidc"
)

// The benchmarks drive whole client sessions over loopback: each op is
// dial, EHLO, (STARTTLS, EHLO,) (AUTH OAUTHBEARER,) MAIL, RCPT, DATA, QUIT.
// Every op opens a TCP connection, so bound b.N to keep clear of the
// ephemeral port range:
//
//	go test -run=NONE -bench='^BenchmarkSession$' -benchtime=2000x -count=6 ./gateway/
//	go test -run=NONE -bench='^BenchmarkThroughput$' -benchtime=20x -count=6 ./gateway/
//
// Client, gateway and upstream share the process, so B/op and allocs/op
// count all three. BenchmarkIdleSessionMemory is in memory_test.go.

// BenchmarkSession measures sessions per second with 1 KiB messages, one
// client at a time and 64 at once.
func BenchmarkSession(b *testing.B) {
	msg := benchMessage(1 << 10)
	for _, bc := range benchCases() {
		b.Run(bc.name, func(b *testing.B) {
			cl, up := bc.start(b, msg)
			b.Run("c=1", func(b *testing.B) {
				b.ReportAllocs()
				dials := up.dials()
				for b.Loop() {
					if err := cl.session(); err != nil {
						b.Fatal(err)
					}
				}
				bc.report(b, up, dials)
			})
			b.Run("c=64", func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(parallelism(64))
				dials := up.dials()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := cl.session(); err != nil {
							b.Error(err)
							return
						}
					}
				})
				bc.report(b, up, dials)
			})
		})
	}
}

// BenchmarkThroughput measures one client sending 10 MiB messages.
func BenchmarkThroughput(b *testing.B) {
	msg := benchMessage(10 << 20)
	for _, bc := range benchCases() {
		if strings.Contains(bc.name, "uncached") {
			continue // one signature check is nothing next to 10 MiB
		}
		b.Run(bc.name, func(b *testing.B) {
			cl, up := bc.start(b, msg)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			dials := up.dials()
			for b.Loop() {
				if err := cl.session(); err != nil {
					b.Fatal(err)
				}
			}
			bc.report(b, up, dials)
		})
	}
}

// A benchCase is what the client sessions talk to.
type benchCase struct {
	name    string
	gateway bool // smtpgate before a discarding upstream; else a bare discarding go-smtp server
	tls     bool // STARTTLS (smtpgate only)
	opts    []envOption
}

func benchCases() []benchCase {
	return []benchCase{
		{name: "gosmtp-discard"},
		{name: "smtpgate-cached", gateway: true, opts: []envOption{insecureAuth}},
		{name: "smtpgate-uncached", gateway: true, opts: []envOption{insecureAuth, noTokenCache}},
		{name: "smtpgate-cached-tls", gateway: true, tls: true},
		{name: "smtpgate-uncached-tls", gateway: true, tls: true, opts: []envOption{noTokenCache}},
	}
}

// start starts the servers for bc and returns a client that sends msg,
// after one warm-up session (which fetches the issuer's keys and fills
// the token cache and the upstream pool). up is the server whose
// connections are counted: the gateway's upstream, or the bare server.
func (bc benchCase) start(b *testing.B, msg []byte) (cl *benchClient, up *discardServer) {
	b.Helper()
	up = newDiscardServer(b)
	if !bc.gateway {
		cl = &benchClient{addr: up.addr, msg: msg}
	} else {
		gw := newBenchGateway(b, up.addr, bc.opts...)
		cl = &benchClient{addr: gw.addr, token: gw.token, msg: msg}
		if bc.tls {
			cl.tls = gw.clientTLS
		}
	}
	if err := cl.session(); err != nil {
		b.Fatalf("warm-up session: %v", err)
	}
	return cl, up
}

// report adds sessions/s and, for the gateway, how many connections it
// dialled to the upstream during the run: with pooling that stays near
// Upstream.MaxIdle however many sessions ran.
func (bc benchCase) report(b *testing.B, up *discardServer, dialsBefore int64) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
	if bc.gateway {
		b.ReportMetric(float64(up.dials()-dialsBefore), "upstream-dials")
	}
}

// parallelism returns the b.SetParallelism argument that makes RunParallel
// start c goroutines (or the next multiple of GOMAXPROCS).
func parallelism(c int) int {
	procs := runtime.GOMAXPROCS(0)
	return (c + procs - 1) / procs
}

// insecureAuth offers AUTH without TLS, for the comparison with a bare
// go-smtp server.
func insecureAuth(gc *gateway.Config, _ *oidc.Config) { gc.AllowInsecureAuth = true }

// noTokenCache makes every AUTH pay the signature check, as a fresh token
// per session would.
func noTokenCache(_ *gateway.Config, vc *oidc.Config) { vc.CacheSize = -1 }

// A benchGateway is smtpgate between the test issuer and an upstream. It
// logs at Info, as in production, to io.Discard.
type benchGateway struct {
	addr      string // submission, STARTTLS
	token     string // for alice@example.com, valid for an hour
	clientTLS *tls.Config
	cert      tls.Certificate
}

// newBenchGateway is newTestEnv for benchmarks and the memory test: the
// gateway relays to upstream and logs nothing below Info, as in production.
func newBenchGateway(tb testing.TB, upstream string, opts ...envOption) *benchGateway {
	tb.Helper()
	e := startGateway(tb, upstream, slog.New(slog.NewJSONHandler(io.Discard, nil)), opts...)
	return &benchGateway{addr: e.addr, token: e.iss.Token(tb, nil), clientTLS: e.clientTLS, cert: e.cert}
}

// A discardServer is a bare go-smtp server, without AUTH or TLS, that
// accepts every transaction and throws the message away: the framework's
// ceiling, and the gateway's upstream in the benchmarks.
type discardServer struct {
	addr     string
	sessions atomic.Int64 // connections accepted
}

func newDiscardServer(tb testing.TB) *discardServer {
	tb.Helper()
	d := &discardServer{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		d.sessions.Add(1)
		return discardSession{}, nil
	}))
	srv.Domain = "upstream.test"
	srv.ErrorLog = slog.NewLogLogger(slog.NewTextHandler(tb.Output(), nil), slog.LevelError)
	l := listen(tb)
	d.addr = l.Addr().String()
	done := make(chan struct{})
	go func() {
		srv.Serve(l)
		close(done)
	}()
	tb.Cleanup(func() {
		srv.Close()
		<-done
	})
	return d
}

func (d *discardServer) dials() int64 { return d.sessions.Load() }

type discardSession struct{}

func (discardSession) Mail(string, *smtp.MailOptions) error { return nil }
func (discardSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (discardSession) Reset()                               {}
func (discardSession) Logout() error                        { return nil }
func (discardSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// A benchClient is a mail client submitting one message per session.
type benchClient struct {
	addr  string
	tls   *tls.Config // STARTTLS with this config; nil for none
	token string      // AUTH OAUTHBEARER with this token; "" for no AUTH
	msg   []byte
}

// session runs one whole session and closes the connection.
func (bc *benchClient) session() error {
	c, err := bc.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SendMail("alice@example.com", []string{"bob@example.org"}, bytes.NewReader(bc.msg)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := c.Quit(); err != nil {
		return fmt.Errorf("QUIT: %w", err)
	}
	return nil
}

// dial connects and gets as far as a successful AUTH.
func (bc *benchClient) dial() (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", bc.addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	var c *smtp.Client
	if bc.tls != nil {
		// EHLO localhost, STARTTLS; Hello below sends the second EHLO.
		if c, err = smtp.NewClientStartTLS(conn, bc.tls); err != nil {
			return nil, fmt.Errorf("STARTTLS: %w", err)
		}
	} else {
		c = smtp.NewClient(conn)
	}
	if err := c.Hello("client.test"); err != nil {
		c.Close()
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if bc.token != "" {
		a := sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{
			Username: "alice@example.com", Token: bc.token, Host: "127.0.0.1", Port: 587,
		})
		if err := c.Auth(a); err != nil {
			c.Close()
			return nil, fmt.Errorf("AUTH: %w", err)
		}
	}
	return c, nil
}

// benchMessage returns a message from alice@example.com of at least size
// bytes, in lines of 78 characters as base64 attachments have.
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: benchmark\r\n" +
		"Date: Fri, 27 Nov 2026 15:00:00 +0000\r\nMessage-ID: <bench@example.com>\r\n\r\n")
	const line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}
