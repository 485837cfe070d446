package mailaddr

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	good := map[string]string{
		"alice@example.com":        "alice@example.com",
		"Alice@Example.COM":        "alice@example.com",
		"first.last+tag@sub.ex.io": "first.last+tag@sub.ex.io",
		"KEVIN@example.com":        "kevin@example.com",
	}
	for in, want := range good {
		a, err := Parse(in)
		if err != nil || a.String() != want {
			t.Errorf("Parse(%q) = %q, %v; want %q", in, a, err, want)
		}
	}
	bad := []string{
		"", " ", "\t", "\u00a0", // blanks, including a non-breaking space
		"\u212Aevin@example.com", // Kelvin sign: strings.ToLower would make it kevin@
		"ålice@example.com", "alice@exämple.com",
		" alice@example.com", "alice@example.com ", "al ice@example.com",
		"alice@example.com\n", "alice\x00@example.com",
		"Alice <alice@example.com>", "<alice@example.com>", "alice@[127.0.0.1]",
		"alice", "@example.com", "alice@", "a@b@c.com", "alice@.example.com", "alice@example..com", "alice@example.com.",
		"alice,bob@example.com", "\"a b\"@example.com",
		strings.Repeat("a", 65) + "@example.com",
		"a@" + strings.Repeat("b", 260),
	}
	for _, in := range bad {
		if a, err := Parse(in); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %q, %v; want an ErrInvalid", in, a, err)
		}
	}
}

func TestParseList(t *testing.T) {
	l, err := ParseList([]string{"a@x.io", "A@X.io", "b@x.io"})
	if err != nil || strings.Join(Strings(l), ",") != "a@x.io,b@x.io" {
		t.Errorf("ParseList = %v, %v", l, err)
	}
	if _, err := ParseList([]string{"a@x.io", " "}); err == nil {
		t.Error("ParseList with a blank succeeded")
	}
}

// FuzzParse checks that whatever Parse accepts is printable ASCII, lower
// case, parses to itself, and contains exactly the @ rules say.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"alice@example.com", "\u212Aevin@example.com", " ", "A@B.C", "a@b@c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		out := a.String()
		if !utf8.ValidString(out) || len(out) != len(s) || !strings.EqualFold(out, s) {
			t.Fatalf("Parse(%q) = %q", s, out)
		}
		for i := 0; i < len(out); i++ {
			if c := out[i]; c <= ' ' || c >= 0x7f || 'A' <= c && c <= 'Z' {
				t.Fatalf("Parse(%q) = %q holds byte %#x", s, out, c)
			}
		}
		if b, err := Parse(out); err != nil || b != a {
			t.Fatalf("Parse(Parse(%q)) = %q, %v", s, b, err)
		}
		if strings.Count(out, "@") != 1 {
			t.Fatalf("Parse(%q) = %q: want exactly one @", s, out)
		}
	})
}
