package outbox

import (
	"net"
	"os"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestOutbox(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir, "outbox.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })

	msg := "From: alice@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nHello\r\n"
	c, err := smtp.Dial(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("alice@example.com", []string{"bob@example.org", "carol@example.org"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	c.Quit()

	list, err := List(dir)
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %v, %v; want one message", list, err)
	}
	m := list[0]
	if m.From != "alice@example.com" || m.To != "bob@example.org, carol@example.org" || m.Subject != "Grüße" {
		t.Errorf("List()[0] = %+v", m)
	}
	got, err := Read(dir, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := "Return-Path: <alice@example.com>\r\nX-Envelope-To: bob@example.org, carol@example.org\r\n" + msg
	if string(got.Raw) != want {
		t.Errorf("Read = %q, want %q", got.Raw, want)
	}
	if tmp, _ := os.ReadDir(dir + "/tmp"); len(tmp) != 0 {
		t.Errorf("tmp/ holds %d files after delivery, want 0", len(tmp))
	}
	for _, bad := range []string{"", "../../etc/passwd", "..", "a/b", strings.Repeat("1", 65), "X"} {
		if _, err := Read(dir, bad); err == nil {
			t.Errorf("Read(%q) succeeded, want not found", bad)
		}
	}
}
