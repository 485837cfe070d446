package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildBinary builds smtpgate once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "smtpgate")
	out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A devProc is a running "smtpgate dev".
type devProc struct {
	cmd     *exec.Cmd
	help    []string // what it printed on stdout
	stderr  *strings.Builder
	web     string
	waitErr chan error
}

func startDev(t *testing.T, bin, dir string, flags ...string) *devProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"dev", "-data", dir}, flags...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &devProc{cmd: cmd, stderr: &strings.Builder{}, waitErr: make(chan error, 1)}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.stop(t) })
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		d.waitErr <- cmd.Wait()
	}()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("smtpgate dev exited before it was ready:\n%s", d.stderr)
			}
			d.help = append(d.help, l)
			if strings.HasPrefix(l, "The configuration is ") {
				go func() {
					for range lines {
					}
				}()
				return d
			}
		case <-timeout:
			t.Fatalf("smtpgate dev not ready within 60s:\n%s", d.stderr)
		}
	}
}

// command returns the printed command line that starts with prefix.
func (d *devProc) command(t *testing.T, prefix string) string {
	t.Helper()
	for _, l := range d.help {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, prefix+" ") {
			return l
		}
	}
	t.Fatalf("smtpgate dev printed no %s command:\n%s", prefix, strings.Join(d.help, "\n"))
	return ""
}

// stop sends SIGINT, as Ctrl-C does, and expects a clean exit.
func (d *devProc) stop(t *testing.T) {
	if d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-d.waitErr:
		if err != nil {
			t.Errorf("smtpgate dev exited with %v after SIGINT:\n%s", err, d.stderr)
		}
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		t.Errorf("smtpgate dev did not stop within 15s of SIGINT")
	}
}

// TestDevCommand runs the real binary the way the README tells a newcomer
// to, and runs the commands it prints, verbatim.
func TestDevCommand(t *testing.T) {
	bash := requireTool(t, "bash")
	requireTool(t, "curl")
	requireTool(t, "swaks")
	bin := buildBinary(t)
	dir := filepath.Join(t.TempDir(), "state")
	a := devAddrs{freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)}
	flags := []string{"-submission", a.Submission, "-submissions", a.Submissions, "-web", a.Web, "-idp", a.IdP, "-upstream", a.Upstream}
	d := startDev(t, bin, dir, flags...)

	if out, err := exec.Command(bash, "-c", d.command(t, "curl")).CombinedOutput(); err != nil {
		t.Fatalf("the printed curl command failed: %v\n%s\n%s", err, out, d.stderr)
	}
	if out, err := exec.Command(bash, "-c", d.command(t, "swaks")).CombinedOutput(); err != nil || !strings.Contains(string(out), "250 2.0.0 Ok: stored as") {
		t.Fatalf("the printed swaks command failed: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "outbox", "new", "*.eml"))
	if len(files) != 2 {
		t.Fatalf("outbox holds %d messages, want 2", len(files))
	}
	var viaCurl string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), "Subject: Hello from smtpgate dev") {
			viaCurl = string(b)
		}
	}
	if !strings.Contains(viaCurl, "(smtpgate) with ESMTPSA") {
		t.Errorf("the curl message in the outbox has no smtpgate Received header:\n%s", viaCurl)
	}
	page := httpGet(t, "http://"+a.Web+"/outbox")
	if !strings.Contains(page, "Hello from smtpgate dev") {
		t.Errorf("the Outbox page does not list the message:\n%s", page)
	}
	// Autoconfig and the add-on, for the dev provider, as printed.
	var autoconfigURL string
	for _, l := range d.help {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Autoconfig" {
			autoconfigURL = f[1]
		}
	}
	if doc := httpGet(t, autoconfigURL); !strings.Contains(doc, "<hostname>localhost</hostname>") || !strings.Contains(doc, "<authentication>OAuth2</authentication>") {
		t.Errorf("autoconfig %s:\n%s", autoconfigURL, doc)
	}
	if xpi := httpGet(t, "http://"+a.Web+"/setup/thunderbird/addon.xpi"); !strings.HasPrefix(xpi, "PK") {
		t.Errorf("the add-on is not a zip archive")
	}
	// check-token accepts the printed token and refuses a forged one.
	curlCmd := d.command(t, "curl")
	_, rest, _ := strings.Cut(curlCmd, "--oauth2-bearer ")
	access, _, _ := strings.Cut(rest, " ")
	out, err := exec.Command(bin, "check-token", "-config", filepath.Join(dir, "smtpgate.yaml"), access).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "accepted: alice@example.com") {
		t.Errorf("check-token on the printed token: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "check-token", "-config", filepath.Join(dir, "smtpgate.yaml"), access[:len(access)-4]+"AAAA").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FAIL signature") {
		t.Errorf("check-token on a forged token: %v\n%s", err, out)
	}
	token, _ := os.ReadFile(filepath.Join(dir, "demo-app-token"))
	d.stop(t)

	// State survives a restart: the same app token still works.
	d = startDev(t, bin, dir, flags...)
	if !strings.Contains(d.command(t, "swaks"), strings.TrimSpace(string(token))) {
		t.Error("the demo app token changed across a restart")
	}
	if out, err := exec.Command(bash, "-c", d.command(t, "swaks")).CombinedOutput(); err != nil {
		t.Fatalf("swaks after restart: %v\n%s", err, out)
	}
	d.stop(t)

	// -reset starts afresh.
	d = startDev(t, bin, dir, append(flags, "-reset")...)
	if files, _ := filepath.Glob(filepath.Join(dir, "outbox", "new", "*.eml")); len(files) != 0 {
		t.Errorf("outbox holds %d messages after -reset, want 0", len(files))
	}
	d.stop(t)
}

func TestDevPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, flag := range []string{"-web", "-idp", "-upstream", "-submission"} {
		t.Run(flag, func(t *testing.T) {
			var out, errOut strings.Builder
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			args := []string{"dev", "-data", t.TempDir(), "-submission", freeAddr(t), "-submissions", freeAddr(t), "-web", freeAddr(t), "-idp", freeAddr(t), "-upstream", freeAddr(t)}
			for i, a := range args {
				if a == flag {
					args[i+1] = l.Addr().String()
				}
			}
			err := run(ctx, args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), flag+" "+l.Addr().String()) || !strings.Contains(err.Error(), "address already in use") {
				t.Errorf("dev with %s taken = %v, want an error naming the flag", flag, err)
			}
		})
	}
}

func TestDevPrintConfig(t *testing.T) {
	var out strings.Builder
	if err := run(t.Context(), []string{"dev", "-print-config", "-data", "/srv/smtpgate-dev"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	_, err := parseConfig(strings.NewReader(out.String()))
	for _, e := range leafErrors(err) {
		if !os.IsNotExist(e) && !strings.Contains(e.Error(), "no such file") {
			t.Errorf("the printed config does not load: %v", e)
		}
	}
	// Paths are relative to the config file, and no key mounts the Outbox.
	if !strings.Contains(out.String(), "which dev keeps in /srv/smtpgate-dev/") || !strings.Contains(out.String(), "dsn: smtpgate.db") || strings.Contains(out.String(), "outbox") {
		t.Errorf("printed config:\n%s", out.String())
	}
}

// TestDevSafety: dev mode refuses a foreign -data directory, -reset
// deletes nothing when the directory holds a file dev did not make, and
// every address must be loopback unless -allow-non-loopback.
func TestDevSafety(t *testing.T) {
	addrs := func(web string) []string {
		return []string{"-submission", freeAddr(t), "-submissions", freeAddr(t), "-web", web, "-idp", freeAddr(t), "-upstream", freeAddr(t)}
	}
	dev := func(args ...string) error {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		return run(ctx, append([]string{"dev"}, args...), io.Discard, io.Discard)
	}

	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "thesis.tex"), []byte("years of work"), 0o600)
	for _, flags := range [][]string{{"-data", foreign}, {"-data", foreign, "-reset"}} {
		err := dev(append(flags, addrs(freeAddr(t))...)...)
		if err == nil || !strings.Contains(err.Error(), "did not make") && !strings.Contains(err.Error(), "does not look like") {
			t.Errorf("dev %v on a foreign directory = %v, want a refusal", flags, err)
		}
		if _, err := os.Stat(filepath.Join(foreign, "thesis.tex")); err != nil {
			t.Fatalf("dev %v deleted a foreign file: %v", flags, err)
		}
		if ents, _ := os.ReadDir(foreign); len(ents) != 1 {
			t.Errorf("dev %v wrote into a foreign directory: %d entries", flags, len(ents))
		}
	}

	// A dev directory with a foreign file in it: -reset deletes nothing.
	dir := filepath.Join(t.TempDir(), "state")
	if err := prepareDataDir(dir); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600)
	before, _ := os.ReadDir(dir)
	err := dev(append([]string{"-data", dir, "-reset"}, addrs(freeAddr(t))...)...)
	if err == nil || !strings.Contains(err.Error(), "notes.txt") || !strings.Contains(err.Error(), "not deleting anything") {
		t.Errorf("dev -reset with a foreign file = %v, want a refusal naming it", err)
	}
	if after, _ := os.ReadDir(dir); len(after) != len(before) {
		t.Errorf("dev -reset deleted %d files despite refusing", len(before)-len(after))
	}
	// Without the foreign file, -reset deletes the directory dev made.
	os.Remove(filepath.Join(dir, "notes.txt"))
	if err := resetDataDir(dir); err != nil {
		t.Fatalf("resetDataDir = %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after -reset %s still exists: %v", dir, err)
	}

	for _, web := range []string{"0.0.0.0:0", "[::]:0", "192.0.2.1:8080"} {
		err := dev(append([]string{"-data", t.TempDir()}, addrs(web)...)...)
		if err == nil || !strings.Contains(err.Error(), "-web "+web+" is not a loopback address") || !strings.Contains(err.Error(), "-allow-non-loopback") {
			t.Errorf("dev -web %s = %v, want a refusal", web, err)
		}
	}
}

// TestDevCertIsLeaf: trusting the dev certificate trusts that one
// certificate, not a CA that could sign for any name.
func TestDevCertIsLeaf(t *testing.T) {
	dir := t.TempDir()
	if err := ensureCert(dir); err != nil {
		t.Fatal(err)
	}
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf.IsCA || c.Leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Errorf("dev certificate: IsCA %v, key usage %b; want a leaf that cannot sign certificates", c.Leaf.IsCA, c.Leaf.KeyUsage)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d", url, resp.StatusCode)
	}
	return string(b)
}
