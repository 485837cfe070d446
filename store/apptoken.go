package store

import (
	"crypto/rand"
	"fmt"
	"hash/crc32"
)

// DefaultPrefix is the token prefix when Options.Prefix is empty.
const DefaultPrefix = "smtpgate"

// Lengths in the token format; see ParseToken.
const (
	idLen        = 12
	secretLen    = 32
	crcLen       = 6
	bodyLen      = idLen + secretLen + crcLen // 50
	maxPrefixLen = 64 - 1 - bodyLen           // 13, so a token fits in 64
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// validatePrefix reports whether p is 1 to 13 characters of [a-z0-9].
func validatePrefix(p string) error {
	if len(p) == 0 || len(p) > maxPrefixLen {
		return fmt.Errorf("store: token prefix %q must be 1 to %d characters", p, maxPrefixLen)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return fmt.Errorf("store: token prefix %q may contain only a-z and 0-9", p)
		}
	}
	return nil
}

// randomBase62 returns n base62 characters from crypto/rand, without modulo
// bias: bytes of 248 and above (62*4) are dropped.
func randomBase62(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4+8)
	for len(out) < n {
		rand.Read(buf) // never returns an error (Go 1.24)
		for _, b := range buf {
			if b < 248 && len(out) < n {
				out = append(out, base62[b%62])
			}
		}
	}
	return string(out)
}

// encodeCRC writes c as crcLen base62 digits.
func encodeCRC(c uint32) string {
	var b [crcLen]byte
	v := uint64(c)
	for i := crcLen - 1; i >= 0; i-- {
		b[i] = base62[v%62]
		v /= 62
	}
	return string(b[:])
}

// decodeCRC is the inverse of encodeCRC. It fails on non-base62 digits and
// on values that do not fit in 32 bits.
func decodeCRC(s string) (uint32, bool) {
	var v uint64
	for i := 0; i < len(s); i++ {
		d := base62Value(s[i])
		if d < 0 {
			return 0, false
		}
		v = v*62 + uint64(d)
	}
	if v > 0xFFFFFFFF {
		return 0, false
	}
	return uint32(v), true
}

func base62Value(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'Z':
		return int(c-'A') + 10
	case 'a' <= c && c <= 'z':
		return int(c-'a') + 36
	}
	return -1
}

// formatToken assembles a token from its parts and appends the checksum.
func formatToken(prefix, id, secret string) string {
	s := prefix + "_" + id + secret
	return s + encodeCRC(crc32.ChecksumIEEE([]byte(s)))
}

// ParseToken checks the form of the app token s, issued with prefix, and
// returns its id and secret. It checks the prefix, the length, the
// characters and the checksum, and touches no database, so a guessed or
// mistyped password costs nothing. Errors wrap ErrInvalid and never contain
// s.
//
// An app token has the form
//
//	<prefix>_<id><secret><crc>
//
// where prefix is Options.Prefix (DefaultPrefix if empty), id is 12 base62
// characters (about 71 random bits, the database key), secret is 32 base62
// characters from crypto/rand (190 bits) and crc is the CRC-32 (IEEE) of
// "<prefix>_<id><secret>", written as 6 base62 digits, most significant
// first and zero-padded. The base62 digits are 0-9, A-Z, a-z in that order.
// A token is len(prefix)+51 characters, at most 64.
//
// The format follows GitHub's tokens: the prefix and the fixed length make a
// leaked token easy to find, and the checksum lets a secret scanner (and
// ParseToken) tell a token from a look-alike without asking the database. A
// scanner can match tokens with the default prefix with
//
//	\bsmtpgate_[0-9A-Za-z]{50}\b
//
// (another prefix in place of "smtpgate") and then verify the CRC.
func ParseToken(prefix, s string) (id, secret string, err error) {
	if len(s) != len(prefix)+1+bodyLen || s[:len(prefix)] != prefix || s[len(prefix)] != '_' {
		return "", "", fmt.Errorf("%w: malformed token: wrong prefix or length", ErrInvalid)
	}
	body := s[len(prefix)+1:]
	for i := 0; i < len(body); i++ {
		if base62Value(body[i]) < 0 {
			return "", "", fmt.Errorf("%w: malformed token: bad character", ErrInvalid)
		}
	}
	want, ok := decodeCRC(body[idLen+secretLen:])
	if !ok || crc32.ChecksumIEEE([]byte(s[:len(s)-crcLen])) != want {
		return "", "", fmt.Errorf("%w: malformed token: bad checksum", ErrInvalid)
	}
	return body[:idLen], body[idLen : idLen+secretLen], nil
}
