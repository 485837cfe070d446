// Package mailaddr is the one mail-address type of smtpgate. Token
// verification (oidc), the web app, the token store and the admin CLI all
// parse addresses here, so "who owns this token" and "who may send as
// whom" are decided by the same rules everywhere.
//
// An Address is a bare addr-spec (RFC 5321 section 4.1.2, local@domain)
// in printable ASCII, lower-cased with ASCII rules only. Unicode case
// folding is deliberately not applied: strings.ToLower maps the Kelvin sign
// U+212A to "k", which would make "\u212Aevin@example.com" and
// "kevin@example.com" the same owner. Non-ASCII addresses (RFC 6531) are
// refused rather than guessed at.
package mailaddr

import (
	"errors"
	"fmt"
	"strings"
)

// Limits from RFC 5321 section 4.5.3.1.
const (
	maxLocal   = 64
	maxDomain  = 255
	maxAddress = 254 // RFC 5321's 256-byte path less the angle brackets
)

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("mailaddr: invalid mail address")

// An Address is a parsed, ASCII-lower-cased mail address. The zero value
// is not an address; IsZero reports it.
type Address struct{ s string }

// Parse checks s and returns it as an Address. It refuses, with an error
// wrapping ErrInvalid that quotes s: blanks and any whitespace, non-ASCII
// or control characters, display names and angle brackets, a missing or
// empty local part or domain, a domain with empty labels, and addresses
// longer than RFC 5321 allows. Letters A-Z become a-z; nothing else
// changes.
func Parse(s string) (Address, error) {
	bad := func(why string) (Address, error) {
		return Address{}, fmt.Errorf("%w %q: %s", ErrInvalid, s, why)
	}
	if strings.TrimSpace(s) == "" {
		return bad("blank")
	}
	if len(s) > maxAddress {
		return bad(fmt.Sprintf("longer than %d bytes", maxAddress))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x80:
			return bad("not ASCII (internationalised addresses are not supported)")
		case c <= ' ' || c == 0x7f:
			return bad("contains a space or control character")
		case strings.IndexByte(`<>()[]\,;:"`, c) >= 0:
			return bad("not a bare address (local@domain)")
		}
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return bad("no @")
	}
	local, domain := s[:at], s[at+1:]
	switch {
	case local == "" || len(local) > maxLocal:
		return bad(fmt.Sprintf("the part before @ must be 1 to %d characters", maxLocal))
	case strings.Contains(local, "@"):
		return bad("more than one @")
	case domain == "" || len(domain) > maxDomain:
		return bad("no domain")
	case strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, ".."):
		return bad("the domain has an empty label")
	}
	return Address{asciiLower(s)}, nil
}

// MustParse is Parse for constants in tests and examples; it panics on an
// invalid address.
func MustParse(s string) Address {
	a, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return a
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// String returns the address, lower-cased; "" for the zero Address.
func (a Address) String() string { return a.s }

// IsZero reports whether a is the zero Address, which no Parse returns.
func (a Address) IsZero() bool { return a.s == "" }

// Domain returns the part after the last @.
func (a Address) Domain() string { return a.s[strings.LastIndexByte(a.s, '@')+1:] }

// ParseList parses every address in l and drops duplicates, keeping the
// first occurrence's position. It stops at the first invalid address.
func ParseList(l []string) ([]Address, error) {
	out := make([]Address, 0, len(l))
	for _, s := range l {
		a, err := Parse(s)
		if err != nil {
			return nil, err
		}
		if !contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

func contains(l []Address, a Address) bool {
	for _, b := range l {
		if b == a {
			return true
		}
	}
	return false
}

// Strings returns the addresses as strings.
func Strings(l []Address) []string {
	out := make([]string, len(l))
	for i, a := range l {
		out[i] = a.s
	}
	return out
}
