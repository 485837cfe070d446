package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

var errHeaderLimit = errors.New("gateway: message header exceeds limit")

// readHeader reads the message header with every line ending normalised to
// CRLF. It stops after the empty line that ends the header, at the end of
// the message, or before the first line that is neither a header field nor
// a continuation, which it returns as rest: that is where an MTA starts the
// body (RFC 5322 section 2.2). The header is checked in exactly the form the
// upstream will see, so a bare CR or LF cannot hide a field from the sender
// policy.
func readHeader(br *bufio.Reader, limit int) (header, rest []byte, err error) {
	var line []byte
	for {
		b, err := br.ReadByte()
		if err == io.EOF {
			if len(line) == 0 {
				return header, nil, nil
			}
		} else if err != nil {
			return nil, nil, err
		}
		if err == nil && b != '\r' && b != '\n' {
			line = append(line, b)
			if len(header)+len(line) > limit {
				return nil, nil, errHeaderLimit
			}
			continue
		}
		if b == '\r' {
			// CRLF or a bare CR: either ends the line.
			if next, err := br.Peek(1); err == nil && next[0] == '\n' {
				br.ReadByte()
			} else if err != nil && err != io.EOF {
				return nil, nil, err
			}
		}
		line = append(line, '\r', '\n')
		switch {
		case len(line) == 2:
			if len(header)+2 > limit {
				return nil, nil, errHeaderLimit
			}
			return append(header, line...), nil, nil
		case isFieldLine(line) || (len(header) > 0 && (line[0] == ' ' || line[0] == '\t')):
			header = append(header, line...)
			if len(header) > limit {
				return nil, nil, errHeaderLimit
			}
			if err == io.EOF {
				return header, nil, nil
			}
			line = line[:0]
		default:
			return header, line, nil
		}
	}
}

// isFieldLine reports whether line starts with a field name and a colon
// (RFC 5322 section 3.6.8: printable ASCII except colon). White space
// between name and colon (the obsolete syntax of section 4.5.3) counts too,
// because MTAs such as Postfix accept "From : x" as a From field.
func isFieldLine(line []byte) bool {
	n := 0 // length of the field name
	for i, c := range line {
		switch {
		case c == ':':
			return n > 0
		case (c == ' ' || c == '\t') && n > 0:
		case c < '!' || c > '~' || n < i:
			return false
		default:
			n++
		}
	}
	return false
}

// receivedHeader is the trace field RFC 5321 section 4.4 asks a relay to
// add, with "ESMTPSA" or "ESMTPA" from RFC 3848 for an authenticated
// submission.
func receivedHeader(helo string, remote net.Addr, hostname, id string, tlsState *tls.ConnectionState, rcpts []string, now time.Time) []byte {
	var b bytes.Buffer
	ip := remote.String()
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	if strings.Contains(ip, ":") {
		ip = "IPv6:" + ip // RFC 5321 section 4.1.3
	}
	with := "ESMTPA"
	if tlsState != nil {
		with = "ESMTPSA"
	}
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (smtpgate) with %s id %s", sanitizeHelo(helo), ip, hostname, with, id)
	if tlsState != nil {
		fmt.Fprintf(&b, "\r\n\t(using %s with cipher %s)", tls.VersionName(tlsState.Version), tls.CipherSuiteName(tlsState.CipherSuite))
	}
	if len(rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", rcpts[0])
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", now.Format(time.RFC1123Z))
	return b.Bytes()
}

// sanitizeHelo keeps the client's HELO name from breaking the header: it is
// client input.
func sanitizeHelo(s string) string {
	s = strings.Map(func(r rune) rune {
		if r <= ' ' || r >= 0x7f || r == '(' || r == ')' || r == ';' {
			return '_'
		}
		return r
	}, s)
	if len(s) > 255 {
		s = s[:255]
	}
	return s
}
