package oidc

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// maxTokenBytes bounds the tokens we look at. Entra tokens with many groups
// run to a few KiB; the SMTP layer accepts lines of 16 KiB.
const maxTokenBytes = 64 << 10

// unverified is what routing needs from a token before its signature is
// checked. Nothing in it may be trusted.
type unverified struct {
	alg, kid, typ string
	iss           string
	aud           []string
}

// parseUnverified reads the JOSE header and the "iss" of a JWS in compact
// serialization (RFC 7515 section 7.1) without checking anything.
func parseUnverified(token string) (unverified, error) {
	header, rest, ok1 := strings.Cut(token, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") {
		return unverified{}, errors.New("not a JWS in compact serialization")
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	if err := decodeSegment(header, &h); err != nil {
		return unverified{}, fmt.Errorf("header: %w", err)
	}
	var p struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
	}
	if err := decodeSegment(payload, &p); err != nil {
		return unverified{}, fmt.Errorf("payload: %w", err)
	}
	u := unverified{alg: h.Alg, kid: h.Kid, typ: h.Typ, iss: p.Iss}
	// aud is a string or an array (RFC 7519 section 4.1.3); anything else
	// is left for the verified check to refuse.
	var one string
	if json.Unmarshal(p.Aud, &one) == nil {
		u.aud = []string{one}
	} else {
		json.Unmarshal(p.Aud, &u.aud)
	}
	return u, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// isATJWT reports whether a JOSE "typ" marks an RFC 9068 access token.
// RFC 9068 section 2.1 says "at+jwt"; RFC 7515 section 4.1.9 allows the
// "application/" prefix, and media types are case-insensitive.
func isATJWT(typ string) bool {
	typ = strings.ToLower(typ)
	return typ == "at+jwt" || typ == "application/at+jwt"
}

// claims is a verified JWT claims set. Keys match exactly, unlike
// encoding/json's struct fields.
type claims map[string]json.RawMessage

// str returns a string claim; ok is false when the claim is absent.
func (c claims) str(name string) (s string, ok bool, err error) {
	raw, ok := c[name]
	if !ok {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", true, fmt.Errorf("claim %q: %w", name, err)
	}
	return s, true, nil
}

// list returns a claim that may be a string or an array of strings.
func (c claims) list(name string) ([]string, error) {
	raw, ok := c[name]
	if !ok {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, nil
	}
	var l []string
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("claim %q: not a string or array of strings", name)
	}
	return l, nil
}

// maxNumericDate is 9999-12-31T23:59:59Z; later values are nonsense.
const maxNumericDate = 253402300799

// date returns a NumericDate claim (RFC 7519 section 2), which may have a
// fraction; ok is false when the claim is absent.
func (c claims) date(name string) (t time.Time, ok bool, err error) {
	raw, ok := c[name]
	if !ok {
		return time.Time{}, false, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return time.Time{}, true, fmt.Errorf("claim %q: %w", name, err)
	}
	if f < 0 || f > maxNumericDate {
		return time.Time{}, true, fmt.Errorf("claim %q: %v out of range", name, f)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true, nil
}

// isFalse reports whether a claim is false or "false", as some providers
// send email_verified as a string.
func (c claims) isFalse(name string) bool {
	raw, ok := c[name]
	if !ok {
		return false
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return !b
	}
	var s string
	return json.Unmarshal(raw, &s) == nil && strings.EqualFold(strings.TrimSpace(s), "false")
}
