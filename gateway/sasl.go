package gateway

import (
	"bytes"
	"errors"
	"strings"
)

// A bearerResponse is what an OAUTHBEARER or XOAUTH2 client sent: the
// bearer token and the identity it claims, if any.
type bearerResponse struct {
	authzid string // "a=" (OAUTHBEARER) or "user=" (XOAUTH2); "" if absent
	token   string
}

// parseOAuthBearer parses an RFC 7628 section 3.1 client response:
//
//	gs2-header %x01 *(key "=" value %x01) %x01
//
// where gs2-header is "n,[a=authzid]," or "y,[a=authzid],". Unknown keys are
// ignored, as section 3.1 requires; channel binding ("p=") is refused.
func parseOAuthBearer(msg []byte) (bearerResponse, error) {
	var r bearerResponse
	// GS2 header: cb-flag "," [authzid] ","
	flag, rest, ok := bytes.Cut(msg, []byte(","))
	if !ok {
		return r, errors.New("missing GS2 header")
	}
	switch string(flag) {
	case "n", "y":
	default:
		if bytes.HasPrefix(flag, []byte("p=")) {
			return r, errors.New("channel binding is not supported")
		}
		return r, errors.New("bad GS2 channel binding flag")
	}
	authz, rest, ok := bytes.Cut(rest, []byte(","))
	if !ok {
		return r, errors.New("unterminated GS2 header")
	}
	if len(authz) > 0 {
		name, ok := bytes.CutPrefix(authz, []byte("a="))
		if !ok {
			return r, errors.New("bad GS2 authorization identity")
		}
		id, err := decodeSASLName(string(name))
		if err != nil {
			return r, err
		}
		r.authzid = id
	}
	if len(rest) == 0 || rest[0] != 0x01 {
		return r, errors.New("missing separator after GS2 header")
	}
	pairs, err := splitPairs(rest[1:])
	if err != nil {
		return r, err
	}
	r.token, err = bearerToken(pairs)
	return r, err
}

// parseXOAUTH2 parses Google's XOAUTH2 client response:
//
//	"user=" mailbox %x01 "auth=Bearer " token %x01 %x01
//
// There is no GS2 header and no escaping. Unknown keys are tolerated.
func parseXOAUTH2(msg []byte) (bearerResponse, error) {
	pairs, err := splitPairs(msg)
	if err != nil {
		return bearerResponse{}, err
	}
	token, err := bearerToken(pairs)
	return bearerResponse{authzid: pairs["user"], token: token}, err
}

// splitPairs reads key=value pairs, each ended by %x01, followed by a final
// %x01. Where a key repeats, the first value counts.
func splitPairs(b []byte) (map[string]string, error) {
	body, ok := bytes.CutSuffix(b, []byte{0x01})
	if !ok {
		return nil, errors.New("response not terminated by ^A")
	}
	pairs := make(map[string]string, 4)
	for len(body) > 0 {
		kv, rest, ok := bytes.Cut(body, []byte{0x01})
		if !ok {
			return nil, errors.New("response not terminated by two ^A")
		}
		k, v, ok := bytes.Cut(kv, []byte("="))
		if !ok || len(k) == 0 {
			return nil, errors.New("malformed key=value pair")
		}
		if _, dup := pairs[string(k)]; !dup {
			pairs[string(k)] = string(v)
		}
		body = rest
	}
	return pairs, nil
}

// bearerToken returns the token of the "auth" pair, "Bearer <token>".
func bearerToken(pairs map[string]string) (string, error) {
	auth, ok := pairs["auth"]
	if !ok {
		return "", errors.New("no auth= value")
	}
	scheme, token, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New(`auth= value is not "Bearer <token>"`)
	}
	token = strings.Trim(token, " ")
	if token == "" {
		return "", errors.New("empty bearer token")
	}
	// RFC 6750 section 2.1 allows only printable characters in b64token.
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c >= 0x7f {
			return "", errors.New("bearer token contains a space or control character")
		}
	}
	return token, nil
}

// decodeSASLName undoes RFC 5801's saslname escaping: "=2C" is ",", "=3D"
// is "=", and any other "=" is an error.
func decodeSASLName(s string) (string, error) {
	if !strings.Contains(s, "=") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"), strings.HasPrefix(s[i:], "=2c"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"), strings.HasPrefix(s[i:], "=3d"):
			b.WriteByte('=')
		default:
			return "", errors.New("bad escape in authorization identity")
		}
		i += 2
	}
	return b.String(), nil
}
