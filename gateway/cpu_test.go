package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/smtpgate/smtpgate/gateway"
	"github.com/smtpgate/smtpgate/internal/loadgen"
	"github.com/smtpgate/smtpgate/oidc"
)

// BenchmarkCPU runs the mail client (internal/loadgen) and, for smtpgate,
// the upstream go-smtp sink each in a process of its own, so the CPU this
// process spends is the server's alone: go-smtp's server discarding
// messages, or smtpgate relaying them. It reports each process's CPU per
// session apart:
//
//	go test -run=NONE -bench='^BenchmarkCPU$' -benchtime=2000x -count=6 ./gateway/
//
// server-µs/session is this process; sink-µs/session the upstream's;
// client-µs/session the client's. With 10 MiB messages (the "10MiB"
// cases, -benchtime=20x) MB/s is reported instead of sessions/s.
func BenchmarkCPU(b *testing.B) {
	for _, size := range []int{1 << 10, 10 << 20} {
		for _, bc := range cpuCases() {
			if size > 1<<10 && (bc.fresh || bc.name == "gosmtp-discard-tls") {
				continue
			}
			for _, c := range []int{1, 64} {
				if size > 1<<10 && c > 1 {
					continue
				}
				name := fmt.Sprintf("%s/c=%d", bc.name, c)
				if size > 1<<10 {
					name = bc.name + "/10MiB"
				}
				b.Run(name, func(b *testing.B) { bc.run(b, c, size) })
			}
		}
	}
}

type cpuCase struct {
	name    string
	gateway bool // smtpgate relaying to a sink process; else go-smtp discarding
	tls     bool // STARTTLS
	fresh   bool // a new token every session (a signature check and a cache miss each)
}

func cpuCases() []cpuCase {
	return []cpuCase{
		{name: "gosmtp-discard"},
		{name: "gosmtp-discard-tls", tls: true},
		{name: "smtpgate-cached", gateway: true},
		{name: "smtpgate-cached-tls", gateway: true, tls: true},
		{name: "smtpgate-fresh", gateway: true, fresh: true},
		{name: "smtpgate-fresh-tls", gateway: true, tls: true, fresh: true},
	}
}

// loadSpec is what the client process is told, through a file.
type loadSpec struct {
	Addr     string
	CA       string // PEM; STARTTLS when set
	Tokens   []string
	Size     int
	C, N     int
	MsgBytes int
}

type loadReport struct {
	Sessions, Errors int
	FirstErr         string
	ElapsedNS        int64
}

const (
	loadSpecEnv = "SMTPGATE_LOAD_SPEC" // path of the client's loadSpec
	sinkEnv     = "SMTPGATE_SINK"      // "1": be the upstream sink
)

func (bc cpuCase) run(b *testing.B, conc, size int) {
	cert, _ := testCert(b)
	spec := loadSpec{Size: size, C: conc, N: b.N}
	var sink *sinkProcess
	if bc.gateway {
		sink = startSinkProcess(b)
		opts := []envOption{func(gc *gateway.Config, _ *oidc.Config) {
			gc.MaxConnsPerClient = 100000
			gc.MaxTransactionsPerIdentity = 1000
		}}
		if !bc.tls {
			opts = append(opts, insecureAuth)
		}
		e := startGateway(b, sink.addr, slog.New(slog.NewJSONHandler(io.Discard, nil)), opts...)
		spec.Addr = e.addr
		cert = e.cert
		if bc.fresh {
			for i := range b.N + 1 {
				spec.Tokens = append(spec.Tokens, e.iss.Token(b, map[string]any{"jti": strconv.Itoa(i)}))
			}
		} else {
			spec.Tokens = []string{e.iss.Token(b, nil)}
		}
	} else {
		srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return discardSession{}, nil }))
		srv.Domain = "discard.test"
		srv.ErrorLog = slog.NewLogLogger(slog.NewTextHandler(io.Discard, nil), slog.LevelError)
		if bc.tls {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		}
		l := listen(b)
		spec.Addr = l.Addr().String()
		go srv.Serve(l)
		b.Cleanup(func() { srv.Close() })
	}
	if bc.tls {
		spec.CA = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}))
	}
	// Warm up: keys fetched, token cached, upstream pool filled.
	warm := spec
	warm.N, warm.C = min(conc, 64), min(conc, 64)
	if bc.fresh {
		warm.Tokens = warm.Tokens[len(warm.Tokens)-1:]
	}
	if _, err := runLoadProcess(b, warm); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	if bc.fresh {
		spec.Tokens = spec.Tokens[:b.N]
	}

	var sink0 time.Duration
	if sink != nil {
		sink0 = sink.cpu(b)
	}
	self0 := selfCPU()
	b.ResetTimer()
	rep, err := runLoadProcess(b, spec)
	b.StopTimer()
	self := selfCPU() - self0
	if err != nil {
		b.Fatal(err)
	}
	if rep.r.Errors > 0 {
		b.Fatalf("%d of %d sessions failed, first: %s", rep.r.Errors, b.N, rep.r.FirstErr)
	}
	n := float64(b.N)
	elapsed := time.Duration(rep.r.ElapsedNS).Seconds()
	if size > 1<<10 {
		b.ReportMetric(float64(size)*n/elapsed/1e6, "MB/s")
	} else {
		b.ReportMetric(n/elapsed, "sessions/s")
	}
	b.ReportMetric(float64(self.Microseconds())/n, "server-µs/session")
	b.ReportMetric(float64(rep.cpu.Microseconds())/n, "client-µs/session")
	if sink != nil {
		b.ReportMetric(float64((sink.cpu(b)-sink0).Microseconds())/n, "sink-µs/session")
	}
}

// selfCPU is the user and system CPU this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type loadResult struct {
	r   loadReport
	cpu time.Duration
}

// runLoadProcess runs the client process for spec and returns its report
// and the CPU it used.
func runLoadProcess(tb testing.TB, spec loadSpec) (loadResult, error) {
	path := filepath.Join(tb.TempDir(), "spec.json")
	data, _ := json.Marshal(spec)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return loadResult{}, err
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), loadSpecEnv+"="+path)
	out, err := cmd.Output()
	if err != nil {
		return loadResult{}, fmt.Errorf("client process: %v: %s", err, out)
	}
	var res loadResult
	for line := range strings.SplitSeq(string(out), "\n") {
		if j, ok := strings.CutPrefix(line, "report "); ok {
			if err := json.Unmarshal([]byte(j), &res.r); err != nil {
				return res, err
			}
		}
	}
	res.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return res, nil
}

// TestLoadHelper is the client process of BenchmarkCPU (and the sink
// process, with SMTPGATE_SINK=1). In the normal test run neither variable
// is set and it does nothing.
func TestLoadHelper(t *testing.T) {
	if os.Getenv(sinkEnv) == "1" {
		runSink(t)
		return
	}
	path := os.Getenv(loadSpecEnv)
	if path == "" {
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var spec loadSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	o := loadgen.Options{Addr: spec.Addr, Tokens: spec.Tokens, Concurrency: spec.C, Sessions: spec.N,
		Message: loadgen.Message("alice@example.com", "bob@example.org", spec.Size), Timeout: 5 * time.Minute}
	if spec.CA != "" {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(spec.CA))
		o.TLS = &tls.Config{RootCAs: pool, ServerName: "localhost"}
	}
	res, err := loadgen.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	rep := loadReport{Sessions: res.Sessions, Errors: res.Errors, ElapsedNS: int64(res.Elapsed)}
	if res.FirstErr != nil {
		rep.FirstErr = res.FirstErr.Error()
	}
	j, _ := json.Marshal(rep)
	fmt.Printf("report %s\n", j)
}

// runSink serves a discarding go-smtp server and answers each line on
// stdin with the CPU it has used, until stdin closes.
func runSink(t *testing.T) {
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return discardSession{}, nil }))
	srv.Domain = "sink.test"
	srv.ErrorLog = slog.NewLogLogger(slog.NewTextHandler(io.Discard, nil), slog.LevelError)
	l := listen(t)
	go srv.Serve(l)
	defer srv.Close()
	fmt.Printf("addr %s\n", l.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		fmt.Printf("cpu %d\n", selfCPU())
	}
}

type sinkProcess struct {
	addr string
	in   io.WriteCloser
	out  *bufio.Scanner
}

func startSinkProcess(tb testing.TB) *sinkProcess {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), sinkEnv+"=1")
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { in.Close(); cmd.Wait() })
	sp := &sinkProcess{in: in, out: bufio.NewScanner(outp)}
	for sp.out.Scan() {
		if a, ok := strings.CutPrefix(sp.out.Text(), "addr "); ok {
			sp.addr = a
			return sp
		}
	}
	tb.Fatal("sink process gave no address")
	return nil
}

func (sp *sinkProcess) cpu(tb testing.TB) time.Duration {
	io.WriteString(sp.in, "\n")
	for sp.out.Scan() {
		if v, ok := strings.CutPrefix(sp.out.Text(), "cpu "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return time.Duration(n)
		}
	}
	tb.Fatal("sink process gave no CPU reading")
	return 0
}
