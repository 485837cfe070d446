package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
)

// The seeds are what real clients send (RFC 7628 section 4, Google's
// XOAUTH2 page, Thunderbird, K-9, msmtp, curl, go-sasl) and the edge cases
// of the table tests.

var oauthBearerSeeds = []string{
	"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
	"n,a=user@example.com,\x01host=server.example.com\x01port=587\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
	"n,,\x01auth=Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln\x01\x01",
	"y,,\x01auth=Bearer tok\x01\x01",
	"n,a=us=2Cer=3Dx@example.com,\x01auth=Bearer tok\x01\x01",
	"n,a=user=41@example.com,\x01auth=Bearer tok\x01\x01",
	"n,a=user=2,\x01auth=Bearer tok\x01\x01",
	"p=tls-unique,,\x01auth=Bearer tok\x01\x01",
	"n,,\x01host=h\x01port=587\x01mtasts=yes\x01auth=Bearer tok\x01\x01",
	"n,,\x01host=server.example.com\x01\x01",
	"n,,\x01auth=bearer tok\x01\x01",
	"n,,\x01auth=Basic dXNlcjpwYXNz\x01\x01",
	"n,,\x01auth=Bearer tok\x01",
	"n,,\x01auth=Bearer \x01\x01",
	"n,,\x01auth=Bearer to k\x01\x01",
	"n,,\x01auth=Bearer first\x01auth=Bearer second\x01\x01",
	"n,a=,\x01auth=Bearer tok\x01\x01",
	"n,,",
	"",
	"\x01",
	"\x01\x01",
}

var xoauth2Seeds = []string{
	"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01",
	"user=alice@example.com\x01auth=Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl\x01\x01",
	"user=bob@contoso.example\x01auth=Bearer EwBwA8l6BAAU+/aB-_~.=\x01\x01",
	"auth=Bearer tok\x01\x01",
	"user=\x01auth=Bearer tok\x01\x01",
	"user=u@example.com\x01host=smtp.example.com\x01port=587\x01auth=Bearer tok\x01\x01",
	"user=u@example.com\x01auth=bearer tok\x01\x01",
	"user=u@example.com\x01auth=Bearer tok\x01",
	"user=u@example.com\x01auth=Bearer tok",
	"user=u@example.com\x01\x01",
	"user=u@example.com\x01auth=Basic tok\x01\x01",
	"n,,\x01auth=Bearer tok\x01\x01",
	"",
	"\x01",
	"\x01\x01",
}

// checkToken is what both mechanisms promise about an accepted token.
func checkToken(t *testing.T, fn string, in []byte, r bearerResponse) {
	t.Helper()
	if r.token == "" {
		t.Fatalf("%s(%q) = %+v with an empty token and no error", fn, in, r)
	}
	for i := 0; i < len(r.token); i++ {
		if c := r.token[i]; c <= ' ' || c >= 0x7f {
			t.Fatalf("%s(%q) token = %q, which has byte %#x", fn, in, r.token, c)
		}
	}
}

func FuzzParseOAuthBearer(f *testing.F) {
	for _, s := range oauthBearerSeeds {
		f.Add([]byte(s))
	}
	for _, s := range xoauth2Seeds {
		f.Add([]byte(s))
	}
	escape := strings.NewReplacer("=", "=3D", ",", "=2C")
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := parseOAuthBearer(in)
		if err != nil {
			return
		}
		checkToken(t, "parseOAuthBearer", in, r)
		// What was accepted, written out again the way a client would,
		// must parse to the same result.
		gs2 := "n,,"
		if r.authzid != "" {
			gs2 = "n,a=" + escape.Replace(r.authzid) + ","
		}
		again := []byte(gs2 + "\x01auth=Bearer " + r.token + "\x01\x01")
		r2, err := parseOAuthBearer(again)
		if err != nil || r2 != r {
			t.Fatalf("parseOAuthBearer(%q) = %+v, but its re-encoding parseOAuthBearer(%q) = %+v, %v", in, r, again, r2, err)
		}
	})
}

func FuzzParseXOAUTH2(f *testing.F) {
	for _, s := range xoauth2Seeds {
		f.Add([]byte(s))
	}
	for _, s := range oauthBearerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := parseXOAUTH2(in)
		if err != nil {
			return
		}
		checkToken(t, "parseXOAUTH2", in, r)
		again := []byte("user=" + r.authzid + "\x01auth=Bearer " + r.token + "\x01\x01")
		r2, err := parseXOAUTH2(again)
		if err != nil || r2 != r {
			t.Fatalf("parseXOAUTH2(%q) = %+v, but its re-encoding parseXOAUTH2(%q) = %+v, %v", in, r, again, r2, err)
		}
	})
}

// normalizeEOL maps CRLF, bare CR and bare LF to LF.
func normalizeEOL(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\r"), []byte("\n"))
}

func FuzzReadHeader(f *testing.F) {
	for _, s := range []string{
		"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hello\r\nDate: Fri, 27 Nov 2026 15:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello Bob.\r\n",
		"From: a@example.com\nSubject: hi\n\nbody\n",
		"From: a@example.com\rSubject: hi\r\rbody\r",
		"X-A: 1\nFrom: bob@example.com\r\n\r\nbody",
		"X-A: 1\rFrom: bob@example.com\r\n\r\nbody",
		"Subject: a\r\n b\r\n\tc\r\nFrom: Alice\r\n <bob@example.com>\r\n\r\n",
		"From: a@example.com\r\nSubject: hi",
		"Hello Bob,\r\nFrom: bob@example.com\r\n\r\n",
		" From: bob@example.com\r\n",
		"From : bob@example.com\r\n\r\n",
		"From: undisclosed-recipients:;\r\n\r\n",
		"From: <@relay.example:bob@example.com>\r\n\r\n",
		"From: =?windows-1252?Q?J=F6rg?= <alice@example.com>\r\n\r\n",
		"A: 1\r\r\nbody",
		"A: 1\n\rbody",
		"From: a@example.com\r",
		"\r\nbody",
		"\r",
		"",
	} {
		f.Add([]byte(s), uint16(2*len(s)+3)) // the largest limit: none
		f.Add([]byte(s), uint16(len(s)/2))
	}
	id := &Identity{Subject: "fuzz", Addresses: []string{"alice@example.com"}}
	f.Fuzz(func(t *testing.T, in []byte, limit16 uint16) {
		// Limits far above the input all mean "unlimited": keep them
		// near its length, where the limit checks are.
		limit := int(limit16) % (2*len(in) + 4)
		br := bufio.NewReader(bytes.NewReader(in))
		header, rest, err := readHeader(br, limit)
		if errors.Is(err, errHeaderLimit) {
			return
		}
		if err != nil {
			t.Fatalf("readHeader(%q, %d) error = %v", in, limit, err)
		}
		if bareCRLF(header) || bareCRLF(rest) {
			t.Fatalf("readHeader(%q, %d) = %q, %q, which has a bare CR or LF", in, limit, header, rest)
		}
		if len(header) > limit {
			t.Fatalf("readHeader(%q, %d) header is %d bytes, over the limit", in, limit, len(header))
		}
		if len(header) > 0 && !bytes.HasSuffix(header, []byte("\r\n")) {
			t.Fatalf("readHeader(%q, %d) header = %q, not CRLF-terminated", in, limit, header)
		}
		if rest != nil && (!bytes.HasSuffix(rest, []byte("\r\n")) || bytes.IndexByte(rest, '\n') != len(rest)-1) {
			t.Fatalf("readHeader(%q, %d) rest = %q, want one CRLF-terminated line", in, limit, rest)
		}
		if len(header) > 0 && !isFieldLine(header) && string(header) != "\r\n" {
			t.Fatalf("readHeader(%q, %d) header = %q, which does not start with a field", in, limit, header)
		}
		// Nothing is lost or made up: only line ends change, and a
		// last line gets one.
		remaining := new(bytes.Buffer)
		remaining.ReadFrom(br)
		got := normalizeEOL(append(append(header, rest...), remaining.Bytes()...))
		want := normalizeEOL(in)
		if !bytes.Equal(got, want) && !bytes.Equal(got, append(want, '\n')) {
			t.Fatalf("readHeader(%q, %d) = %q, %q and leaves %q, which is not the input", in, limit, header, rest, remaining)
		}
		// The sender policy takes whatever readHeader gives it.
		checkHeader(id, header, len(in)%2 == 0)
	})
}
