package gateway

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/emersion/go-smtp"
)

// mayUse reports whether the identity may send as addr. Addresses compare
// with ASCII case folding only (see asciiEqualFold): mail systems treat
// local parts that way in practice, and Unicode folding would let
// look-alike characters through.
func (id *Identity) mayUse(addr string) bool {
	for _, a := range id.Addresses {
		if asciiEqualFold(a, addr) {
			return true
		}
	}
	return false
}

// addressParser decodes display names leniently: only the addresses matter
// here, and net/mail's default decoder refuses charsets it does not know.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// senderFields are the header fields that name who sends (RFC 5322
// sections 3.6.2 and 3.6.6); each address in each of them must be one the
// identity may send as. No other field is parsed, so an odd field
// elsewhere in the header cannot get a message refused.
var senderFields = []string{"From", "Sender", "Resent-From", "Resent-Sender"}

// checkHeader applies the sender policy to a header read by readHeader:
// exactly one From field (RFC 5322 section 3.6), and every address in the
// sender fields the identity's. Non-ASCII addresses need SMTPUTF8 (RFC
// 6532).
func checkHeader(id *Identity, header []byte, smtputf8 bool) *smtp.SMTPError {
	froms := 0
	for name, value := range headerFields(header) {
		field := ""
		for _, f := range senderFields {
			if strings.EqualFold(name, f) {
				field = f
			}
		}
		if field == "" {
			continue
		}
		if field == "From" {
			froms++
		}
		addrs, err := addressParser.ParseList(value)
		if err != nil {
			return badHeader(field + ": field cannot be parsed")
		}
		if len(addrs) == 0 {
			// RFC 5322 section 3.6.2: at least one mailbox.
			return badHeader(field + ": field has no address")
		}
		for _, a := range addrs {
			if !smtputf8 && !isASCII(a.Address) {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
					Message: field + ": non-ASCII address needs the SMTPUTF8 parameter on MAIL"}
			}
			if !id.mayUse(a.Address) {
				return senderRefused(field+": header", a.Address)
			}
		}
	}
	if froms != 1 {
		return badHeader(fmt.Sprintf("a message must have exactly one From: field, this one has %d", froms))
	}
	return nil
}

// headerFields yields each field of a header (CRLF line ends, as readHeader
// returns it) as its name, without white space before the colon (Postfix
// reads "From :" as From), and its unfolded value.
func headerFields(header []byte) func(yield func(name, value string) bool) {
	return func(yield func(string, string) bool) {
		var name string
		var value []byte
		have := false
		for len(header) > 0 {
			line := header
			if i := bytes.Index(header, []byte("\r\n")); i >= 0 {
				line, header = header[:i], header[i+2:]
			} else {
				header = nil
			}
			if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
				if have {
					value = append(value, line...) // unfold: drop the CRLF
				}
				continue
			}
			if have && !yield(name, string(value)) {
				return
			}
			have = false
			n, v, ok := bytes.Cut(line, []byte(":"))
			if !ok {
				continue // the empty line that ends the header
			}
			name, value, have = string(bytes.TrimRight(n, " \t")), append(value[:0], v...), true
		}
		if have {
			yield(name, string(value))
		}
	}
}
