package gateway_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/smtpgate/smtpgate/gateway"
	"github.com/smtpgate/smtpgate/oidc"
)

// The parent tells the client process what to do in these variables.
const (
	idleAddrEnv  = "SMTPGATE_IDLE_ADDR"  // the gateway's submission address
	idleNEnv     = "SMTPGATE_IDLE_N"     // how many sessions to open
	idleTokenEnv = "SMTPGATE_IDLE_TOKEN" // the bearer token
	idleCAEnv    = "SMTPGATE_IDLE_CA"    // PEM certificate to trust for STARTTLS; empty for no TLS
	idleModeEnv  = "SMTPGATE_IDLE_MODE"  // "auth" (default), "ehlo", or "partial-auth"
)

// partialAuthBytes is how much of an AUTH line the partial-auth clients
// send before they stall.
const partialAuthBytes = 16 << 10

// BenchmarkIdleSessionMemory measures what the gateway holds for each
// idle session: b.N clients connect, (STARTTLS,) EHLO and AUTH
// OAUTHBEARER, then wait ("tls", "no-tls"); or only say EHLO ("pre-auth");
// or send 16 KiB of an AUTH line and stall ("partial-auth-line"). The
// clients run in a child process so that only the gateway's memory is
// counted. Run it with -benchtime=500x for 500 sessions, 10000x for the
// load test; ns/op is the time to set one up, including the child's start.
func BenchmarkIdleSessionMemory(b *testing.B) {
	for _, tc := range []struct {
		name string
		tls  bool
		mode string
	}{{"tls", true, "auth"}, {"no-tls", false, "auth"}, {"pre-auth", false, "ehlo"}, {"partial-auth-line", false, "partial-auth"}} {
		b.Run(tc.name, func(b *testing.B) {
			readTimeout := func(gc *gateway.Config, _ *oidc.Config) {
				gc.ReadTimeout = time.Hour
				gc.MaxConns = 100000
				gc.MaxConnsPerClient = 100000
			}
			opts := []envOption{readTimeout}
			if !tc.tls {
				opts = append(opts, insecureAuth)
			}
			up := newDiscardServer(b)
			gw := newBenchGateway(b, up.addr, opts...)
			warm := &benchClient{addr: gw.addr, token: gw.token, msg: benchMessage(1 << 10)}
			env := []string{idleAddrEnv + "=" + gw.addr, idleNEnv + "=" + strconv.Itoa(b.N), idleTokenEnv + "=" + gw.token, idleModeEnv + "=" + tc.mode}
			if tc.tls {
				warm.tls = gw.clientTLS
				ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: gw.cert.Certificate[0]})
				env = append(env, idleCAEnv+"="+string(ca))
			}
			// Fetch the issuer's keys and fill the token cache and the
			// upstream pool before the first reading.
			if err := warm.session(); err != nil {
				b.Fatalf("warm-up session: %v", err)
			}

			before, gBefore := gatewayMemory()
			b.ResetTimer()
			cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClientsHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				b.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			var out bytes.Buffer
			ready := false
			sc := bufio.NewScanner(stdout)
			for !ready && sc.Scan() {
				ready = sc.Text() == "ready"
				out.WriteString(sc.Text() + "\n")
			}
			b.StopTimer()
			if !ready {
				cmd.Wait()
				b.Fatalf("client process ended before its sessions were up:\n%s%s", out.Bytes(), stderr.Bytes())
			}
			after, gAfter := gatewayMemory()

			stdin.Close()
			for sc.Scan() {
				out.WriteString(sc.Text() + "\n")
			}
			if err := cmd.Wait(); err != nil {
				b.Fatalf("client process: %v\n%s%s", err, out.Bytes(), stderr.Bytes())
			}

			n := float64(b.N)
			heap := float64(after.HeapInuse) - float64(before.HeapInuse)
			stack := float64(after.StackInuse) - float64(before.StackInuse)
			b.ReportMetric((heap+stack)/n, "bytes/session")
			b.ReportMetric(heap/n, "heap-bytes/session")
			b.ReportMetric(stack/n, "stack-bytes/session")
			b.ReportMetric(float64(gAfter-gBefore)/n, "goroutines/session")
		})
	}
}

// gatewayMemory returns the memory statistics and the number of goroutines
// after a full collection.
func gatewayMemory() (runtime.MemStats, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms, runtime.NumGoroutine()
}

// TestIdleClientsHelper is the client process of
// BenchmarkIdleSessionMemory. In the normal test run its variables are not
// set, and it passes without doing anything.
func TestIdleClientsHelper(t *testing.T) {
	addr := os.Getenv(idleAddrEnv)
	if addr == "" {
		return
	}
	n, err := strconv.Atoi(os.Getenv(idleNEnv))
	if err != nil {
		t.Fatalf("%s: %v", idleNEnv, err)
	}
	cl := &benchClient{addr: addr, token: os.Getenv(idleTokenEnv)}
	if ca := os.Getenv(idleCAEnv); ca != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(ca)) {
			t.Fatalf("%s holds no certificate", idleCAEnv)
		}
		cl.tls = &tls.Config{RootCAs: pool, ServerName: "localhost"}
	}
	mode := os.Getenv(idleModeEnv)
	clients := make([]io.Closer, n)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	var g errgroup.Group
	g.SetLimit(8)
	for i := range clients {
		g.Go(func() error {
			if mode == "ehlo" || mode == "partial-auth" {
				c, err := dialEHLO(addr, mode == "partial-auth")
				if c != nil {
					clients[i] = c
				}
				return err
			}
			c, err := cl.dial()
			if c != nil {
				clients[i] = c
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("ready\n")
	// Hold the sessions until the parent has measured.
	io.Copy(io.Discard, os.Stdin)
}

// dialEHLO connects, says EHLO and waits for the reply; with partialAuth
// it then sends the first partialAuthBytes of an AUTH line and stalls.
func dialEHLO(addr string, partialAuth bool) (net.Conn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(time.Minute))
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		conn.Close()
		return nil, err
	}
	if err := tp.PrintfLine("EHLO idle.test"); err != nil {
		conn.Close()
		return nil, err
	}
	if _, _, err := tp.ReadResponse(250); err != nil {
		conn.Close()
		return nil, err
	}
	if partialAuth {
		line := "AUTH XOAUTH2 " + strings.Repeat("A", partialAuthBytes-len("AUTH XOAUTH2 "))
		if _, err := io.WriteString(conn, line); err != nil {
			conn.Close()
			return nil, err
		}
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}
