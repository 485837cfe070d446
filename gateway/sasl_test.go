package gateway

import (
	"strings"
	"testing"
)

// rfc7628Token is the token of the examples in RFC 7628 section 4.
const rfc7628Token = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="

// saslTest is one client response and what parsing it must give: either a
// result, or an error whose text contains err, which pins the check that
// refused it.
type saslTest struct {
	name string
	in   string
	want bearerResponse
	err  string
}

func runSASLTests(t *testing.T, fn string, parse func([]byte) (bearerResponse, error), tests []saslTest) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse([]byte(tc.in))
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("%s(%q) = %v, want %+v", fn, tc.in, err, tc.want)
			case tc.err == "" && got != tc.want:
				t.Errorf("%s(%q) = %+v, want %+v", fn, tc.in, got, tc.want)
			case tc.err != "" && err == nil:
				t.Errorf("%s(%q) = %+v, want error containing %q", fn, tc.in, got, tc.err)
			case tc.err != "" && !strings.Contains(err.Error(), tc.err):
				t.Errorf("%s(%q) error = %q, want error containing %q", fn, tc.in, err, tc.err)
			}
		})
	}
}

func TestParseOAuthBearer(t *testing.T) {
	runSASLTests(t, "parseOAuthBearer", parseOAuthBearer, []saslTest{
		// RFC 7628 section 4.1 (IMAP) and 4.2 (SMTP).
		{
			name: "RFC 7628 4.1",
			in:   "n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer " + rfc7628Token + "\x01\x01",
			want: bearerResponse{authzid: "user@example.com", token: rfc7628Token},
		},
		{
			name: "RFC 7628 4.2",
			in:   "n,a=user@example.com,\x01host=server.example.com\x01port=587\x01auth=Bearer " + rfc7628Token + "\x01\x01",
			want: bearerResponse{authzid: "user@example.com", token: rfc7628Token},
		},
		{
			name: "go-sasl client",
			in:   "n,a=alice@example.com,\x01host=mail.example.com\x01port=587\x01auth=Bearer tok\x01\x01",
			want: bearerResponse{authzid: "alice@example.com", token: "tok"},
		},
		{name: "no authzid", in: "n,,\x01auth=Bearer tok\x01\x01", want: bearerResponse{token: "tok"}},
		{name: "flag y", in: "y,,\x01auth=Bearer tok\x01\x01", want: bearerResponse{token: "tok"}},
		{name: "flag y with authzid", in: "y,a=u@example.com,\x01auth=Bearer tok\x01\x01", want: bearerResponse{authzid: "u@example.com", token: "tok"}},
		{name: "empty a=", in: "n,a=,\x01auth=Bearer tok\x01\x01", want: bearerResponse{token: "tok"}},
		{
			name: "escaped authzid",
			in:   "n,a=us=2Cer=3Dx@example.com,\x01auth=Bearer tok\x01\x01",
			want: bearerResponse{authzid: "us,er=x@example.com", token: "tok"},
		},
		{
			name: "lower-case escapes",
			in:   "n,a=a=2cb=3dc,\x01auth=Bearer tok\x01\x01",
			want: bearerResponse{authzid: "a,b=c", token: "tok"},
		},
		{
			name: "escape of an escape",
			in:   "n,a==3D2C,\x01auth=Bearer tok\x01\x01",
			want: bearerResponse{authzid: "=2C", token: "tok"},
		},
		{name: "bad escape", in: "n,a=user=41@example.com,\x01auth=Bearer tok\x01\x01", err: "bad escape"},
		{name: "truncated escape", in: "n,a=user=2,\x01auth=Bearer tok\x01\x01", err: "bad escape"},
		{name: "bare = in authzid", in: "n,a=a=b,\x01auth=Bearer tok\x01\x01", err: "bad escape"},
		{name: "channel binding", in: "p=tls-unique,,\x01auth=Bearer tok\x01\x01", err: "channel binding"},
		{name: "channel binding with authzid", in: "p=tls-exporter,a=u@example.com,\x01auth=Bearer tok\x01\x01", err: "channel binding"},
		{name: "bad flag", in: "x,,\x01auth=Bearer tok\x01\x01", err: "bad GS2 channel binding flag"},
		{name: "upper-case flag", in: "N,,\x01auth=Bearer tok\x01\x01", err: "bad GS2 channel binding flag"},
		{name: "empty flag", in: ",,\x01auth=Bearer tok\x01\x01", err: "bad GS2 channel binding flag"},
		{name: "authzid without a=", in: "n,user@example.com,\x01auth=Bearer tok\x01\x01", err: "bad GS2 authorization identity"},
		{name: "no GS2 header", in: "auth=Bearer tok\x01\x01", err: "missing GS2 header"},
		{name: "XOAUTH2 response", in: "user=u@example.com\x01auth=Bearer tok\x01\x01", err: "missing GS2 header"},
		{name: "unterminated GS2 header", in: "n,a=user@example.com", err: "unterminated GS2 header"},
		{name: "no separator after GS2 header", in: "n,,auth=Bearer tok\x01\x01", err: "missing separator"},
		{name: "GS2 header only", in: "n,,", err: "missing separator"},
		{name: "GS2 header and separator only", in: "n,,\x01", err: "not terminated by ^A"},
		{
			name: "unknown keys ignored",
			in:   "n,,\x01host=h\x01port=587\x01mtasts=yes\x01Vendor=x=y\x01empty=\x01auth=Bearer tok\x01\x01",
			want: bearerResponse{token: "tok"},
		},
		{
			name: "CR LF and HTAB in another value",
			in:   "n,,\x01host=a\r\n\tb\x01auth=Bearer tok\x01\x01",
			want: bearerResponse{token: "tok"},
		},
		{name: "missing auth", in: "n,,\x01host=server.example.com\x01port=587\x01\x01", err: "no auth= value"},
		{name: "no pairs", in: "n,,\x01\x01", err: "no auth= value"},
		{name: "key case matters", in: "n,,\x01Auth=Bearer tok\x01\x01", err: "no auth= value"},
		{name: "scheme lower case", in: "n,,\x01auth=bearer tok\x01\x01", want: bearerResponse{token: "tok"}},
		{name: "scheme upper case", in: "n,,\x01auth=BEARER tok\x01\x01", want: bearerResponse{token: "tok"}},
		{name: "scheme Basic", in: "n,,\x01auth=Basic dXNlcjpwYXNz\x01\x01", err: `not "Bearer <token>"`},
		{name: "scheme without token", in: "n,,\x01auth=Bearer\x01\x01", err: `not "Bearer <token>"`},
		{name: "scheme glued to token", in: "n,,\x01auth=Bearertok\x01\x01", err: `not "Bearer <token>"`},
		{name: "missing final ^A", in: "n,,\x01auth=Bearer tok\x01", err: "not terminated by two ^A"},
		{name: "no ^A at all", in: "n,,\x01auth=Bearer tok", err: "not terminated by ^A"},
		{name: "empty token", in: "n,,\x01auth=Bearer \x01\x01", err: "empty bearer token"},
		{name: "blank token", in: "n,,\x01auth=Bearer    \x01\x01", err: "empty bearer token"},
		{name: "spaces around token", in: "n,,\x01auth=Bearer  tok  \x01\x01", want: bearerResponse{token: "tok"}},
		{name: "space in token", in: "n,,\x01auth=Bearer to k\x01\x01", err: "space or control"},
		{name: "tab in token", in: "n,,\x01auth=Bearer to\tk\x01\x01", err: "space or control"},
		{name: "CR LF in token", in: "n,,\x01auth=Bearer tok\r\n\x01\x01", err: "space or control"},
		{name: "NUL in token", in: "n,,\x01auth=Bearer to\x00k\x01\x01", err: "space or control"},
		{name: "DEL in token", in: "n,,\x01auth=Bearer tok\x7f\x01\x01", err: "space or control"},
		{name: "8-bit token", in: "n,,\x01auth=Bearer t\xc3\xb6k\x01\x01", err: "space or control"},
		{name: "duplicate auth, first wins", in: "n,,\x01auth=Bearer first\x01auth=Bearer second\x01\x01", want: bearerResponse{token: "first"}},
		{name: "duplicate auth, bad first", in: "n,,\x01auth=Basic x\x01auth=Bearer second\x01\x01", err: `not "Bearer <token>"`},
		{name: "pair without =", in: "n,,\x01host\x01auth=Bearer tok\x01\x01", err: "malformed key=value pair"},
		{name: "empty key", in: "n,,\x01=x\x01auth=Bearer tok\x01\x01", err: "malformed key=value pair"},
		{name: "extra ^A after GS2 header", in: "n,,\x01\x01auth=Bearer tok\x01\x01", err: "malformed key=value pair"},
		{name: "three final ^A", in: "n,,\x01auth=Bearer tok\x01\x01\x01", err: "malformed key=value pair"},
		{name: "empty", in: "", err: "missing GS2 header"},
		{name: "^A alone", in: "\x01", err: "missing GS2 header"},
		{name: "^A^A", in: "\x01\x01", err: "missing GS2 header"},
	})
}

func TestParseXOAUTH2(t *testing.T) {
	runSASLTests(t, "parseXOAUTH2", parseXOAUTH2, []saslTest{
		// https://developers.google.com/workspace/gmail/imap/xoauth2-protocol
		{
			name: "Google example",
			in:   "user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01",
			want: bearerResponse{authzid: "someuser@example.com", token: "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"},
		},
		{
			name: "Thunderbird JWT",
			in:   "user=alice@example.com\x01auth=Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl\x01\x01",
			want: bearerResponse{authzid: "alice@example.com", token: "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"},
		},
		{
			name: "Microsoft opaque token",
			in:   "user=bob@contoso.example\x01auth=Bearer EwBwA8l6BAAU+/aB-_~.=\x01\x01",
			want: bearerResponse{authzid: "bob@contoso.example", token: "EwBwA8l6BAAU+/aB-_~.="},
		},
		{name: "no user", in: "auth=Bearer tok\x01\x01", want: bearerResponse{token: "tok"}},
		{name: "empty user", in: "user=\x01auth=Bearer tok\x01\x01", want: bearerResponse{token: "tok"}},
		{name: "auth before user", in: "auth=Bearer tok\x01user=u@example.com\x01\x01", want: bearerResponse{authzid: "u@example.com", token: "tok"}},
		{
			name: "unknown fields",
			in:   "user=u@example.com\x01host=smtp.example.com\x01port=587\x01auth=Bearer tok\x01vendor=x\x01\x01",
			want: bearerResponse{authzid: "u@example.com", token: "tok"},
		},
		{name: "no escaping", in: "user=a=2Cb=c@example.com\x01auth=Bearer tok\x01\x01", want: bearerResponse{authzid: "a=2Cb=c@example.com", token: "tok"}},
		{name: "duplicate user, first wins", in: "user=a@example.com\x01user=b@example.com\x01auth=Bearer tok\x01\x01", want: bearerResponse{authzid: "a@example.com", token: "tok"}},
		{name: "scheme lower case", in: "user=u@example.com\x01auth=bearer tok\x01\x01", want: bearerResponse{authzid: "u@example.com", token: "tok"}},
		{name: "missing terminator", in: "user=u@example.com\x01auth=Bearer tok\x01", err: "not terminated by two ^A"},
		{name: "no ^A at all", in: "user=u@example.com\x01auth=Bearer tok", err: "not terminated by ^A"},
		{name: "missing auth", in: "user=u@example.com\x01\x01", err: "no auth= value"},
		{name: "scheme Basic", in: "user=u@example.com\x01auth=Basic tok\x01\x01", err: `not "Bearer <token>"`},
		{name: "empty token", in: "user=u@example.com\x01auth=Bearer \x01\x01", err: "empty bearer token"},
		{name: "space in token", in: "user=u@example.com\x01auth=Bearer a b\x01\x01", err: "space or control"},
		{name: "OAUTHBEARER response", in: "n,,\x01auth=Bearer tok\x01\x01", err: "malformed key=value pair"},
		{name: "empty", in: "", err: "not terminated by ^A"},
		{name: "^A alone", in: "\x01", err: "no auth= value"},
		{name: "^A^A", in: "\x01\x01", err: "malformed key=value pair"},
	})
}
