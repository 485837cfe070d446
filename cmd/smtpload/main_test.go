package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"
)

type countBackend struct{ msgs atomic.Int64 }

func (b *countBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return countSession{b}, nil }

type countSession struct{ b *countBackend }

func (countSession) Mail(string, *smtp.MailOptions) error { return nil }
func (countSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (countSession) Reset()                               {}
func (countSession) Logout() error                        { return nil }
func (s countSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	s.b.msgs.Add(1)
	return err
}

func TestRun(t *testing.T) {
	b := &countBackend{}
	srv := smtp.NewServer(b)
	srv.Domain = "sink.test"
	srv.ErrorLog = slog.NewLogLogger(slog.NewTextHandler(t.Output(), nil), slog.LevelError)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	var out strings.Builder
	if err := run(context.Background(), []string{"-addr", l.Addr().String(), "-n", "20", "-c", "4", "-size", "2048"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.HasPrefix(out.String(), "20 sessions, 0 errors") || b.msgs.Load() != 20 {
		t.Errorf("output %q, sink got %d messages, want 20", out.String(), b.msgs.Load())
	}
}

func TestRunRefusesRemote(t *testing.T) {
	var out strings.Builder
	err := run(context.Background(), []string{"-addr", "192.0.2.1:587", "-n", "1"}, &out)
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("run against 192.0.2.1 = %v, want a refusal before any connection", err)
	}
}
