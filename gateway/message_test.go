package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-smtp"
)

// bareCRLF reports whether b holds a CR or LF that is not part of a CRLF.
func bareCRLF(b []byte) bool {
	b = bytes.ReplaceAll(b, []byte("\r\n"), nil)
	return bytes.ContainsAny(b, "\r\n")
}

func TestReadHeader(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		limit  int
		header string
		rest   string
		body   string // what is left in the reader
		err    error
	}{
		{
			name:   "CRLF",
			in:     "From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n",
			header: "From: a@example.com\r\nSubject: hi\r\n\r\n",
			body:   "body\r\n",
		},
		{
			name:   "bare LF",
			in:     "From: a@example.com\nSubject: hi\n\nbody\n",
			header: "From: a@example.com\r\nSubject: hi\r\n\r\n",
			body:   "body\n",
		},
		{
			name:   "bare CR",
			in:     "From: a@example.com\rSubject: hi\r\rbody\r",
			header: "From: a@example.com\r\nSubject: hi\r\n\r\n",
			body:   "body\r",
		},
		{
			name:   "mixed endings",
			in:     "A: 1\r\nB: 2\nC: 3\rD: 4\r\r\nbody",
			header: "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
			body:   "body",
		},
		{
			name:   "LF CR is two line ends",
			in:     "A: 1\n\rbody",
			header: "A: 1\r\n\r\n",
			body:   "body",
		},
		{
			name:   "CR then CRLF ends the header",
			in:     "A: 1\r\r\nbody",
			header: "A: 1\r\n\r\n",
			body:   "body",
		},
		{
			name:   "continuation lines",
			in:     "Subject: a\r\n b\r\n\tc\nFrom: Alice\r\n <alice@example.com>\r\n\r\nbody",
			header: "Subject: a\r\n b\r\n\tc\r\nFrom: Alice\r\n <alice@example.com>\r\n\r\n",
			body:   "body",
		},
		{
			name:   "whitespace-only continuation",
			in:     "Subject: a\r\n \r\n\r\nbody",
			header: "Subject: a\r\n \r\n\r\n",
			body:   "body",
		},
		{
			name:   "field without space after colon",
			in:     "From:a@example.com\r\nX-Empty:\r\n\r\n",
			header: "From:a@example.com\r\nX-Empty:\r\n\r\n",
		},
		{
			name:   "header only, no blank line",
			in:     "From: a@example.com\r\nSubject: hi\r\n",
			header: "From: a@example.com\r\nSubject: hi\r\n",
		},
		{
			name:   "header only, last line unterminated",
			in:     "From: a@example.com\r\nSubject: hi",
			header: "From: a@example.com\r\nSubject: hi\r\n",
		},
		{
			name:   "header only, bare LF",
			in:     "From: a@example.com\nSubject: hi\n",
			header: "From: a@example.com\r\nSubject: hi\r\n",
		},
		{
			name: "first line is not a field",
			in:   "Hello Bob,\r\nFrom: bob@example.com\r\n\r\n",
			rest: "Hello Bob,\r\n",
			body: "From: bob@example.com\r\n\r\n",
		},
		{
			name: "first line is indented",
			in:   " From: bob@example.com\r\nX: 1\r\n",
			rest: " From: bob@example.com\r\n",
			body: "X: 1\r\n",
		},
		{
			name: "first line starts with a colon",
			in:   ": x\r\n",
			rest: ": x\r\n",
		},
		{
			name:   "non-field line after fields",
			in:     "From: a@example.com\r\nnot a field\r\nmore\r\n",
			header: "From: a@example.com\r\n",
			rest:   "not a field\r\n",
			body:   "more\r\n",
		},
		{
			name:   "8-bit field name",
			in:     "From: a@example.com\r\nF\xc3\xb6o: x\r\n\r\n",
			header: "From: a@example.com\r\n",
			rest:   "F\xc3\xb6o: x\r\n",
			body:   "\r\n",
		},
		{
			name:   "non-field line ended by bare LF",
			in:     "A: 1\r\nbody\nmore",
			header: "A: 1\r\n",
			rest:   "body\r\n",
			body:   "more",
		},
		{
			name:   "non-field line ended by bare CR before LF",
			in:     "A: 1\r\nbody\r\rmore",
			header: "A: 1\r\n",
			rest:   "body\r\n",
			body:   "\rmore",
		},
		{
			name:   "non-field last line unterminated",
			in:     "A: 1\r\nbody",
			header: "A: 1\r\n",
			rest:   "body\r\n",
		},
		{
			name:   "empty first line",
			in:     "\r\nbody\r\n",
			header: "\r\n",
			body:   "body\r\n",
		},
		{
			name:   "bare LF first line",
			in:     "\nbody\r\n",
			header: "\r\n",
			body:   "body\r\n",
		},
		{
			name: "empty message",
			in:   "",
		},
		{
			name:   "bare CR right before EOF",
			in:     "From: a@example.com\r",
			header: "From: a@example.com\r\n",
		},
		{
			name:   "bare CR alone",
			in:     "\r",
			header: "\r\n",
		},
		{
			name:   "non-field line with bare CR before EOF",
			in:     "A: 1\r\nbody\r",
			header: "A: 1\r\n",
			rest:   "body\r\n",
		},
		{
			name:   "body is not counted",
			in:     "A: 1\r\n\r\n" + strings.Repeat("x", 100),
			limit:  8,
			header: "A: 1\r\n\r\n",
			body:   strings.Repeat("x", 100),
		},
		{
			name:   "header exactly at the limit",
			in:     "A: 1\r\nB: 2\r\n",
			limit:  12,
			header: "A: 1\r\nB: 2\r\n",
		},
		{
			name:  "long field",
			in:    "Subject: " + strings.Repeat("x", 100) + "\r\n\r\n",
			limit: 64,
			err:   errHeaderLimit,
		},
		{
			name:  "many fields",
			in:    strings.Repeat("X: 1\r\n", 20) + "\r\n",
			limit: 64,
			err:   errHeaderLimit,
		},
		{
			name:  "limit counts the CRLF that bare LF becomes",
			in:    "A: 1\nB: 2\n",
			limit: 11,
			err:   errHeaderLimit,
		},
		{
			name:  "limit counts the blank line",
			in:    "A: 1\r\nB: 2\r\n\r\nbody",
			limit: 12,
			err:   errHeaderLimit,
		},
		{
			name:  "unterminated line beyond the limit",
			in:    "Subject: " + strings.Repeat("x", 100),
			limit: 64,
			err:   errHeaderLimit,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			limit := tc.limit
			if limit == 0 {
				limit = 1 << 10
			}
			br := bufio.NewReader(strings.NewReader(tc.in))
			header, rest, err := readHeader(br, limit)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("readHeader(%q, %d) error = %v, want %v", tc.in, limit, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("readHeader(%q, %d) error = %v", tc.in, limit, err)
			}
			if string(header) != tc.header || string(rest) != tc.rest {
				t.Errorf("readHeader(%q, %d) = %q, %q, want %q, %q", tc.in, limit, header, rest, tc.header, tc.rest)
			}
			if tc.rest == "" && rest != nil {
				t.Errorf("readHeader(%q, %d) rest = %q, want nil", tc.in, limit, rest)
			}
			body, _ := io.ReadAll(br)
			if string(body) != tc.body {
				t.Errorf("after readHeader(%q, %d) the reader holds %q, want %q", tc.in, limit, body, tc.body)
			}
		})
	}
}

func TestReadHeaderReadError(t *testing.T) {
	errBoom := errors.New("boom")
	for _, in := range []string{"", "From: a@example.com", "From: a@example.com\r\n", "From: a@example.com\r"} {
		br := bufio.NewReader(io.MultiReader(strings.NewReader(in), iotest.ErrReader(errBoom)))
		if header, rest, err := readHeader(br, 1<<10); !errors.Is(err, errBoom) || header != nil || rest != nil {
			t.Errorf("readHeader(%q then error) = %q, %q, %v, want nil, nil, %v", in, header, rest, err, errBoom)
		}
	}
}

func TestIsFieldLine(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{"From: a@example.com\r\n", true},
		{"From:a\r\n", true},
		{"X:\r\n", true},
		{"X-Weird!#$%&'*+-.^_`|~[]{}: y\r\n", true},
		{": x\r\n", false},
		{" From: x\r\n", false},
		{"\tFrom: x\r\n", false},
		{"From x\r\n", false},
		{"From : x\r\n", true},
		{"From \t: x\r\n", true},
		{"Fr om: x\r\n", false},
		{"\r\n", false},
		{"", false},
		{"Fr\xc3\xb6m: x\r\n", false},
		{"Fr\x00m: x\r\n", false},
		{"Fr\x7fm: x\r\n", false},
	}
	for _, tc := range tests {
		if got := isFieldLine([]byte(tc.line)); got != tc.want {
			t.Errorf("isFieldLine(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

func TestReceivedHeader(t *testing.T) {
	now := time.Date(2026, 3, 14, 15, 9, 26, 0, time.FixedZone("", 3600))
	remote := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 54321}
	tls13 := &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256}
	tls12 := &tls.ConnectionState{Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}
	tests := []struct {
		name   string
		helo   string
		remote net.Addr
		tls    *tls.ConnectionState
		rcpts  []string
		want   string
	}{
		{
			name: "TLS, one recipient", helo: "client.example", remote: remote, tls: tls13, rcpts: []string{"bob@example.org"},
			want: "Received: from client.example ([192.0.2.7])\r\n" +
				"\tby gw.example.com (smtpgate) with ESMTPSA id 0123456789AB\r\n" +
				"\t(using TLS 1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n" +
				"\tfor <bob@example.org>;\r\n" +
				"\tSat, 14 Mar 2026 15:09:26 +0100\r\n",
		},
		{
			name: "TLS 1.2, two recipients", helo: "client.example", remote: remote, tls: tls12, rcpts: []string{"bob@example.org", "carol@example.org"},
			want: "Received: from client.example ([192.0.2.7])\r\n" +
				"\tby gw.example.com (smtpgate) with ESMTPSA id 0123456789AB\r\n" +
				"\t(using TLS 1.2 with cipher TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384);\r\n" +
				"\tSat, 14 Mar 2026 15:09:26 +0100\r\n",
		},
		{
			name: "no TLS, one recipient", helo: "[192.0.2.7]", remote: remote, rcpts: []string{"bob@example.org"},
			want: "Received: from [192.0.2.7] ([192.0.2.7])\r\n" +
				"\tby gw.example.com (smtpgate) with ESMTPA id 0123456789AB\r\n" +
				"\tfor <bob@example.org>;\r\n" +
				"\tSat, 14 Mar 2026 15:09:26 +0100\r\n",
		},
		{
			name: "no TLS, two recipients", helo: "client.example", remote: remote, rcpts: []string{"bob@example.org", "carol@example.org"},
			want: "Received: from client.example ([192.0.2.7])\r\n" +
				"\tby gw.example.com (smtpgate) with ESMTPA id 0123456789AB;\r\n" +
				"\tSat, 14 Mar 2026 15:09:26 +0100\r\n",
		},
		{
			name: "no recipients", helo: "client.example", remote: remote,
			want: "Received: from client.example ([192.0.2.7])\r\n" +
				"\tby gw.example.com (smtpgate) with ESMTPA id 0123456789AB;\r\n" +
				"\tSat, 14 Mar 2026 15:09:26 +0100\r\n",
		},
		{
			name: "hostile HELO", helo: "x)\r\nFrom: ceo@example.com\r\n\r\n(", remote: remote, tls: tls13, rcpts: []string{"bob@example.org"},
			want: "Received: from x___From:_ceo@example.com_____ ([192.0.2.7])\r\n" +
				"\tby gw.example.com (smtpgate) with ESMTPSA id 0123456789AB\r\n" +
				"\t(using TLS 1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n" +
				"\tfor <bob@example.org>;\r\n" +
				"\tSat, 14 Mar 2026 15:09:26 +0100\r\n",
		},
		{
			name: "address without port", helo: "client.example", remote: &net.IPAddr{IP: net.ParseIP("192.0.2.8")}, rcpts: []string{"bob@example.org"},
			want: "Received: from client.example ([192.0.2.8])\r\n" +
				"\tby gw.example.com (smtpgate) with ESMTPA id 0123456789AB\r\n" +
				"\tfor <bob@example.org>;\r\n" +
				"\tSat, 14 Mar 2026 15:09:26 +0100\r\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := receivedHeader(tc.helo, tc.remote, "gw.example.com", "0123456789AB", tc.tls, tc.rcpts, now)
			if string(got) != tc.want {
				t.Errorf("receivedHeader(%q, %v, …, %v) =\n%q\nwant\n%q", tc.helo, tc.remote, tc.rcpts, got, tc.want)
			}
			// Whatever the input, it is one well-formed field.
			if bareCRLF(got) {
				t.Errorf("receivedHeader(%q, …) = %q, which has a bare CR or LF", tc.helo, got)
			}
			h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(got, "\r\n"...)))).ReadMIMEHeader()
			if err != nil || len(h) != 1 || len(h["Received"]) != 1 {
				t.Errorf("receivedHeader(%q, …) parses as %q, %v, want one Received field", tc.helo, h, err)
			}
		})
	}
}

func TestSanitizeHelo(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"client.example", "client.example"},
		{"[192.0.2.1]", "[192.0.2.1]"},
		{"[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]"},
		{"", ""},
		{"a b", "a_b"},
		{"x(y);z)", "x_y__z_"},
		{"evil\r\nFrom: ceo@example.com", "evil__From:_ceo@example.com"},
		{"tab\there", "tab_here"},
		{"\x00\x01\x1f\x7f", "____"},
		{"b\u00fccher.example", "b_cher.example"},
		{"\u4f8b\u3048.jp", "__.jp"},
		{"\xff\xfe", "__"},
		{strings.Repeat("a", 300), strings.Repeat("a", 255)},
		{strings.Repeat("\u00e9", 300), strings.Repeat("_", 255)},
		{strings.Repeat("a", 255), strings.Repeat("a", 255)},
	}
	for _, tc := range tests {
		if got := sanitizeHelo(tc.in); got != tc.want {
			t.Errorf("sanitizeHelo(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestCheckHeader covers address syntax the end-to-end TestSenderPolicy
// does not.
func TestCheckHeader(t *testing.T) {
	id := &Identity{Subject: "test#alice", Addresses: []string{"alice@example.com", "team@example.com"}}
	refused := smtp.EnhancedCode{5, 7, 1}   // senderRefused
	malformed := smtp.EnhancedCode{5, 6, 0} // badHeader
	tests := []struct {
		name   string
		header string
		want   smtp.EnhancedCode // zero: accepted
	}{
		{"plain", "From: alice@example.com\r\n\r\n", smtp.EnhancedCode{}},
		{"no blank line", "From: alice@example.com\r\n", smtp.EnhancedCode{}},
		{"empty header", "", malformed},
		{"blank line only", "\r\n", malformed},
		{"no From", "Sender: alice@example.com\r\n", malformed},
		{"two From fields", "From: alice@example.com\r\nFrom: team@example.com\r\n", malformed},
		{"Resent-From another address", "From: alice@example.com\r\nResent-From: bob@example.com\r\n", refused},
		{"Resent-Sender another address", "From: alice@example.com\r\nRESENT-SENDER: bob@example.com\r\n", refused},
		{"Resent-From allowed", "From: alice@example.com\r\nResent-From: team@example.com\r\n", smtp.EnhancedCode{}},
		{"raw ISO-2022-JP in Subject", "From: alice@example.com\r\nSubject: \x1b$B$3$s$K$A$O\x1b(B\r\n", smtp.EnhancedCode{}},
		{"Kelvin sign for k", "From: \u212Aevin@example.com\r\n", smtp.EnhancedCode{5, 6, 7}},
		{"non-ASCII address without SMTPUTF8", "From: al\u00efce@example.com\r\n", smtp.EnhancedCode{5, 6, 7}},
		{"upper-case field name", "FROM: bob@example.com\r\n", refused},
		{"lower-case field name", "sender: bob@example.com\r\n", refused},
		{"empty group", "From: undisclosed-recipients:;\r\n", malformed},
		{"obsolete blank before colon", "From: alice@example.com\r\nFrom : bob@example.com\r\n", refused},
		{"group of allowed addresses", "From: Us: alice@example.com, Team <team@example.com>;\r\n", smtp.EnhancedCode{}},
		{"group with another address", "From: Us: alice@example.com, bob@example.com;\r\n", refused},
		{"trailing comment", "From: alice@example.com (Alice Liddell)\r\n", smtp.EnhancedCode{}},
		{"comment after angle address", "From: Alice <alice@example.com> (work)\r\n", smtp.EnhancedCode{}},
		{"comment naming another address", "From: alice@example.com (bob@example.com)\r\n", smtp.EnhancedCode{}},
		{"comment after another address", "From: bob@example.com (alice@example.com)\r\n", refused},
		// net/mail does not take comments before or inside an addr-spec:
		// such fields are refused as unparseable, never let through.
		{"leading comment", "From: (Alice) alice@example.com\r\n", malformed},
		{"comment in local part", "From: Alice <alice(x)@example.com>\r\n", malformed},
		// net/mail has no obs-route either.
		{"obsolete route", "From: <@relay.example:bob@example.com>\r\n", malformed},
		{"obsolete route to an allowed address", "From: <@relay.example:alice@example.com>\r\n", malformed},
		{"quoted local part", "From: \"alice\"@example.com\r\n", smtp.EnhancedCode{}},
		{"quoted local part in angle address", "From: Alice <\"alice\"@example.com>\r\n", smtp.EnhancedCode{}},
		{"quoted other local part", "From: \"bob\"@example.com\r\n", refused},
		{"quoted address as local part", "From: \"alice@example.com\"@evil.example\r\n", refused},
		{"quoted address as display name", "From: \"alice@example.com\" <bob@example.com>\r\n", refused},
		{"unquoted address as display name", "From: alice@example.com <bob@example.com>\r\n", malformed},
		{"two addresses without comma", "From: alice@example.com bob@example.com\r\n", malformed},
		{"empty From", "From:\r\n", malformed},
		{"blank From", "From:   \r\n", malformed},
		{"empty Sender", "From: alice@example.com\r\nSender:\r\n", malformed},
		{"empty list entries", "From: , alice@example.com,\r\n", smtp.EnhancedCode{}},
		{"unclosed angle address", "From: Alice <alice@example.com\r\n", malformed},
		{"folded across lines", "From: Alice\r\n <alice@example.com>,\r\n\tTeam <team@example.com>\r\n", smtp.EnhancedCode{}},
		{"encoded-word display name", "From: =?utf-8?b?Qm9i?= <bob@example.com>\r\n", refused},
		{"unknown charset", "From: =?x-unknown?q?Alice?= <alice@example.com>\r\n", smtp.EnhancedCode{}},
		{"Reply-To is not checked", "From: alice@example.com\r\nReply-To: bob@example.com\r\n", smtp.EnhancedCode{}},
		// Only the sender fields are parsed: an odd field elsewhere
		// does not refuse the message.
		{"field name net/textproto refuses", "From: alice@example.com\r\nX(a): b\r\n", smtp.EnhancedCode{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := checkHeader(id, []byte(tc.header), false)
			switch {
			case tc.want == (smtp.EnhancedCode{}) && got != nil:
				t.Errorf("checkHeader(%q) = %v, want nil", tc.header, got)
			case tc.want != (smtp.EnhancedCode{}) && got == nil:
				t.Errorf("checkHeader(%q) = nil, want 550 %v", tc.header, tc.want)
			case got != nil && (got.Code != 550 || got.EnhancedCode != tc.want):
				t.Errorf("checkHeader(%q) = %d %v %q, want 550 %v", tc.header, got.Code, got.EnhancedCode, got.Message, tc.want)
			}
		})
	}
}

// TestCheckHeaderSMTPUTF8 compares non-ASCII addresses exactly once the
// client asked for SMTPUTF8: the Kelvin sign is not a "k".
func TestCheckHeaderSMTPUTF8(t *testing.T) {
	id := &Identity{Subject: "test#kevin", Addresses: []string{"kevin@example.com", "j\u00f6rg@example.com"}}
	for _, tc := range []struct {
		header string
		ok     bool
	}{
		{"From: j\u00f6rg@example.com\r\n", true},
		{"From: J\u00f6RG@EXAMPLE.com\r\n", true},
		{"From: J\u00d6rg@example.com\r\n", false},
		{"From: \u212Aevin@example.com\r\n", false},
		{"From: KEVIN@example.com\r\n", true},
	} {
		got := checkHeader(id, []byte(tc.header), true)
		if (got == nil) != tc.ok {
			t.Errorf("checkHeader(%q, smtputf8) = %v, want ok=%v", tc.header, got, tc.ok)
		}
	}
}
