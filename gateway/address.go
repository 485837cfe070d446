package gateway

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// mailParams are the ESMTP parameters of MAIL FROM this server supports:
// SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531) and AUTH (RFC 4954
// section 5, accepted and not passed on).
type mailParams struct {
	size     int64
	body     string // "", "7BIT" or "8BITMIME"
	smtputf8 bool
}

// errParam is an ESMTP parameter the server does not know: 555 (RFC 5321
// section 4.1.1.11).
var errParam = errors.New("gateway: unrecognized parameter")

// parsePathArg parses the argument of MAIL or RCPT after "FROM:" or "TO:":
// a path in angle brackets, then ESMTP parameters separated by spaces. A
// space before the "<" is tolerated, as most servers do. It returns the
// address in the form to forward it in (see canonicalAddress), "" for the
// null path "<>", and the parameters as KEY[=VALUE] words.
func parsePathArg(arg string) (addr string, params []string, err error) {
	arg = strings.TrimLeft(arg, " ")
	if !strings.HasPrefix(arg, "<") {
		return "", nil, errors.New("the address must be in angle brackets")
	}
	// The closing bracket is the first one outside a quoted string.
	end, quoted, escaped := -1, false, false
	for i := 1; i < len(arg) && end < 0; i++ {
		c := arg[i]
		switch {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case !quoted && c == '>':
			end = i
		}
	}
	if end < 0 {
		return "", nil, errors.New("missing closing angle bracket")
	}
	path := arg[1:end]
	rest := arg[end+1:]
	if rest != "" && rest[0] != ' ' {
		return "", nil, errors.New("text after the closing angle bracket")
	}
	params = strings.Fields(rest)
	if path == "" {
		return "", params, nil
	}
	// RFC 5321 section 4.1.2: a source route ("@a,@b:") is accepted and
	// ignored (appendix C).
	if path[0] == '@' {
		i := strings.IndexByte(path, ':')
		if i < 0 {
			return "", nil, errors.New("bad source route")
		}
		path = path[i+1:]
	}
	addr, err = canonicalAddress(path)
	return addr, params, err
}

// canonicalAddress checks a mailbox (RFC 5321 section 4.1.2, with UTF-8
// from RFC 6531) and returns it as it is forwarded upstream: a local part
// that is a dot-string as it is, any other (quoted-string) local part
// quoted, so that `"bob@x> NOTIFY=SUCCESS"@y` stays one address at the
// upstream instead of becoming ESMTP parameters there.
func canonicalAddress(mailbox string) (string, error) {
	at := strings.LastIndexByte(mailbox, '@')
	if at <= 0 || at == len(mailbox)-1 {
		return "", errors.New("the address needs a local part and a domain")
	}
	local, domain := mailbox[:at], mailbox[at+1:]
	if !utf8.ValidString(mailbox) {
		return "", errors.New("the address is not valid UTF-8")
	}
	if err := checkDomain(domain); err != nil {
		return "", err
	}
	if local[0] == '"' {
		unq, err := unquoteLocal(local)
		if err != nil {
			return "", err
		}
		local = unq
	} else if !isDotString(local) {
		return "", errors.New("the local part has characters that need quoting")
	}
	if isDotString(local) {
		return local + "@" + domain, nil
	}
	return quoteLocal(local) + "@" + domain, nil
}

// unquoteLocal decodes a quoted-string local part.
func unquoteLocal(s string) (string, error) {
	if len(s) < 2 || s[len(s)-1] != '"' {
		return "", errors.New("unterminated quoted local part")
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		switch {
		case c == '\\':
			i++
			if i >= len(s)-1 || s[i] < ' ' || s[i] > '~' {
				return "", errors.New("bad quoted pair in the local part")
			}
			b.WriteByte(s[i])
		case c == '"':
			return "", errors.New("stray quote in the local part")
		case c < ' ' || c == 0x7f:
			return "", errors.New("control character in the local part")
		default:
			b.WriteByte(c)
		}
	}
	if b.Len() == 0 {
		return "", errors.New("empty local part")
	}
	return b.String(), nil
}

// quoteLocal is the quoted-string form of a local part.
func quoteLocal(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// isDotString reports whether s is a dot-string: atoms of atext (RFC 5322
// section 3.2.3; UTF-8 allowed, RFC 6531) joined by single dots.
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || c == '.' || isAtext(c) {
			continue
		}
		return false
	}
	return true
}

func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// checkDomain accepts a domain name (UTF-8 labels allowed) or an address
// literal in brackets.
func checkDomain(d string) error {
	if d[0] == '[' {
		if len(d) < 3 || d[len(d)-1] != ']' {
			return errors.New("bad address literal")
		}
		lit := d[1 : len(d)-1]
		for i := 0; i < len(lit); i++ {
			// RFC 5321 section 4.1.3: dcontent is %d33-90 / %d94-126.
			if c := lit[i]; c < 33 || c > 126 || c == '[' || c == ']' || c == '\\' {
				return errors.New("bad address literal")
			}
		}
		return nil
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("bad domain")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if c < 0x80 && !(c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return errors.New("bad domain")
			}
		}
	}
	return nil
}

// isASCII reports whether s has only ASCII characters.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// parseMailParams reads the parameters of MAIL FROM.
func parseMailParams(params []string) (mailParams, error) {
	var p mailParams
	for _, w := range params {
		key, val, hasVal := strings.Cut(w, "=")
		switch strings.ToUpper(key) {
		case "SIZE":
			n, err := strconv.ParseInt(val, 10, 64)
			if !hasVal || err != nil || n < 0 {
				return p, errors.New("bad SIZE parameter")
			}
			p.size = n
		case "BODY":
			switch v := strings.ToUpper(val); v {
			case "7BIT", "8BITMIME":
				p.body = v
			default:
				return p, errParam
			}
		case "SMTPUTF8":
			if hasVal {
				return p, errors.New("SMTPUTF8 takes no value")
			}
			p.smtputf8 = true
		case "AUTH":
			// RFC 4954 section 5: the client's claim of who originally
			// submitted the message; a submission server need not
			// believe it, and this one does not pass it on.
		default:
			return p, errParam
		}
	}
	return p, nil
}

// asciiEqualFold compares addresses with ASCII case folding only: Unicode
// folding would let the Kelvin sign U+212A pass for "k". Non-ASCII bytes
// compare exactly.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
