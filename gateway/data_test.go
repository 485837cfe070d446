package gateway

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// refDecode is the DATA decoder written the obvious way, one byte at a
// time: the reference the bulk decoder is checked against. It returns the
// message, how many input bytes the data took (terminator included), and
// whether the terminator was found.
func refDecode(in []byte) (msg []byte, used int, ended bool) {
	var out []byte
	strictBOL, bol := true, true // at a line start; reached by a real CRLF
	for i := 0; i < len(in); i++ {
		c := in[i]
		if bol && c == '.' {
			// A dot line ended by a real CRLF at a strict line start ends
			// the data; any other dot at a line start is stuffing, unless
			// the line has nothing else.
			if strictBOL && i+2 < len(in)+0 && in[i+1] == '\r' && in[i+2] == '\n' {
				return out, i + 3, true
			}
			if i+1 == len(in) {
				return out, len(in), false // undecided until more input
			}
			switch n := in[i+1]; {
			case n == '\r' && i+2 == len(in):
				return out, len(in), false
			case n == '\r' || n == '\n':
				out = append(out, '.')
				// the line end is handled by the loop as usual
				bol, strictBOL = false, false
				continue
			default:
				bol, strictBOL = false, false
				continue // drop the stuffing dot
			}
		}
		switch c {
		case '\r':
			if i+1 == len(in) {
				return out, len(in), false
			}
			out = append(out, '\r', '\n')
			if in[i+1] == '\n' {
				i++
				bol, strictBOL = true, true
			} else {
				bol, strictBOL = true, false
			}
		case '\n':
			out = append(out, '\r', '\n')
			bol, strictBOL = true, false
		default:
			out = append(out, c)
			bol, strictBOL = false, false
		}
	}
	return out, len(in), false
}

// decodeAll runs the bulk decoder over in, read through r (which may
// split it), with Read buffers of size bufSize.
func decodeAll(t testing.TB, r io.Reader, limit int64, bufSize int) (msg []byte, rest []byte, err error) {
	t.Helper()
	cr := &connReader{rd: r, buf: make([]byte, 64)}
	d := newDataReader(cr, limit)
	buf := make([]byte, bufSize)
	for range 1 << 20 {
		n, err := d.Read(buf)
		msg = append(msg, buf[:n]...)
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			rest, _ := io.ReadAll(io.MultiReader(bytes.NewReader(cr.buffered()), r))
			return msg, rest, err
		}
	}
	t.Fatal("decoder made no progress")
	return nil, nil, nil
}

var dataTests = []struct {
	name, in, want string
}{
	{"plain", "a\r\nb\r\n.\r\n", "a\r\nb\r\n"},
	{"empty", ".\r\n", ""},
	{"stuffed dot", "..x\r\n.\r\n", ".x\r\n"},
	{"stuffed lone dot", "..\r\n.\r\n", ".\r\n"},
	{"bare LF", "a\nb\n\r\n.\r\n", "a\r\nb\r\n\r\n"},
	{"bare CR", "a\rb\r\r\n.\r\n", "a\r\nb\r\n\r\n"},
	// The smuggling sequences of CVE-2023-51764: none ends the data.
	{"LF.LF", "x\n.\nMAIL FROM:<ceo@example.com>\r\n.\r\n", "x\r\n.\r\nMAIL FROM:<ceo@example.com>\r\n"},
	{"LF.CRLF", "x\n.\r\nMAIL\r\n.\r\n", "x\r\n.\r\nMAIL\r\n"},
	{"CR.CRLF", "x\r.\r\nMAIL\r\n.\r\n", "x\r\n.\r\nMAIL\r\n"},
	{"CRLF.CR", "x\r\n.\rMAIL\r\n.\r\n", "x\r\n.\r\nMAIL\r\n"},
	{"CRLF.LF", "x\r\n.\nMAIL\r\n.\r\n", "x\r\n.\r\nMAIL\r\n"},
	{"LF.CR", "x\n.\rMAIL\r\n.\r\n", "x\r\n.\r\nMAIL\r\n"},
	{"CR.CR", "x\r.\rMAIL\r\n.\r\n", "x\r\n.\r\nMAIL\r\n"},
	{"hello CR CR LF", "hello\r\r\n.\r\n", "hello\r\n\r\n"},
	{"binary", "\x00\xff\x7f\r\n.\r\n", "\x00\xff\x7f\r\n"},
}

func TestDataReader(t *testing.T) {
	for _, tc := range dataTests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in + "QUIT\r\n"
			for _, bufSize := range []int{3, 4, 7, 64, 4096} {
				for name, r := range map[string]io.Reader{
					"whole":    strings.NewReader(in),
					"bytewise": iotest.OneByteReader(strings.NewReader(in)),
					"halves":   io.MultiReader(strings.NewReader(in[:len(in)/2]), strings.NewReader(in[len(in)/2:])),
				} {
					msg, rest, err := decodeAll(t, r, 1<<20, bufSize)
					if err != nil || string(msg) != tc.want || string(rest) != "QUIT\r\n" {
						t.Errorf("%s, buffer %d: decode(%q) = %q, rest %q, %v; want %q, rest %q", name, bufSize, in, msg, rest, err, tc.want, "QUIT\r\n")
					}
				}
			}
			ref, _, ended := refDecode([]byte(in))
			if !ended || string(ref) != tc.want {
				t.Errorf("refDecode(%q) = %q, %v; the reference disagrees with the table", in, ref, ended)
			}
		})
	}
}

func TestDataReaderEOF(t *testing.T) {
	for _, in := range []string{"", "abc", "abc\r\n", "abc\r\n.", "abc\r\n.\r", "abc\n.\n"} {
		_, _, err := decodeAll(t, strings.NewReader(in), 1<<20, 64)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("decode(%q) then EOF: err = %v, want io.ErrUnexpectedEOF (a truncated message)", in, err)
		}
	}
}

func TestDataReaderLimit(t *testing.T) {
	in := strings.Repeat("0123456789\r\n", 100) + ".\r\nQUIT\r\n"
	cr := &connReader{rd: strings.NewReader(in), buf: make([]byte, 64)}
	d := newDataReader(cr, 500)
	_, err := io.Copy(io.Discard, d)
	if !errors.Is(err, errMessageTooLarge) {
		t.Fatalf("copy = %v, want errMessageTooLarge", err)
	}
	if err := d.drain(); err != nil || !d.done() {
		t.Fatalf("drain = %v, done %v", err, d.done())
	}
	if rest := string(cr.buffered()); rest != "QUIT\r\n" {
		t.Errorf("after drain, buffered = %q, want the next command", rest)
	}
}

// FuzzDataReader checks the bulk decoder against the byte-at-a-time
// reference, for every input and split.
func FuzzDataReader(f *testing.F) {
	for _, tc := range dataTests {
		f.Add([]byte(tc.in), uint16(3))
	}
	f.Add([]byte("\r\r\r\n.\r\r\n.\r\n"), uint16(1))
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		at := int(split) % (len(in) + 1)
		r := io.MultiReader(bytes.NewReader(in[:at]), bytes.NewReader(in[at:]))
		msg, rest, err := decodeAll(t, r, 1<<30, 5+int(split%64))
		ref, used, ended := refDecode(in)
		if ended {
			if err != nil || !bytes.Equal(msg, ref) || !bytes.Equal(rest, in[used:]) {
				t.Fatalf("decode(%q) = %q, rest %q, %v; reference %q, rest %q", in, msg, rest, err, ref, in[used:])
			}
		} else if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("decode(%q) = %q, %v; the data never ends, want io.ErrUnexpectedEOF", in, msg, err)
		} else if !bytes.HasPrefix(ref, msg) {
			t.Fatalf("decode(%q) = %q before EOF, reference %q", in, msg, ref)
		}
		if bareCRLF(msg) {
			t.Fatalf("decode(%q) = %q, which has a bare CR or LF", in, msg)
		}
	})
}

func TestReadLine(t *testing.T) {
	in := "EHLO x\r\nNOOP " + strings.Repeat("a", 600) + "\r\nAUTH PLAIN " + strings.Repeat("b", 3000) + "\r\nNOOP\nQUIT\r\n"
	limit := func(p []byte) int {
		if bytes.HasPrefix(p, []byte("AUTH")) || len(p) < 5 {
			return 4096
		}
		return 512
	}
	for name, r := range map[string]io.Reader{
		"whole":    strings.NewReader(in),
		"bytewise": iotest.OneByteReader(strings.NewReader(in)),
	} {
		cr := &connReader{rd: r, buf: make([]byte, smallBufSize)}
		var got []string
		for {
			line, err := cr.readLine(limit)
			if errors.Is(err, errLineTooLong) {
				got = append(got, "TOO LONG")
				continue
			}
			if err != nil {
				break
			}
			s := string(line)
			if len(s) > 20 {
				s = s[:20]
			}
			got = append(got, s)
		}
		want := []string{"EHLO x", "TOO LONG", "AUTH PLAIN " + strings.Repeat("b", 9), "NOOP", "QUIT"}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: lines = %q, want %q", name, got, want)
		}
		if len(cr.buf) > smallBufSize && cr.w-cr.r <= smallBufSize {
			cr.shrink()
		}
	}
}
