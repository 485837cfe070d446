package gateway

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"net/mail"
	"net/textproto"
	"strings"

	"github.com/emersion/go-smtp"
)

// mayUse reports whether the identity may send as addr. Addresses compare
// case-insensitively: mail systems treat local parts that way in practice.
func (id *Identity) mayUse(addr string) bool {
	for _, a := range id.Addresses {
		if strings.EqualFold(a, addr) {
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

// checkHeader applies the sender policy to the From: and Sender: fields of
// a header read by readHeader. Every address in every From: and Sender:
// field must be one the identity may send as. A message without From: is
// left to the envelope check.
func checkHeader(id *Identity, header []byte) *smtp.SMTPError {
	if !bytes.HasSuffix(header, []byte("\r\n\r\n")) {
		header = append(header[:len(header):len(header)], '\r', '\n')
	}
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(header))).ReadMIMEHeader()
	if err != nil {
		return badHeader("cannot be parsed")
	}
	for key, values := range h {
		// "From :" is a From field to the upstream: textproto keeps the
		// blank in the key.
		field := textproto.CanonicalMIMEHeaderKey(strings.TrimRight(key, " \t"))
		if field != "From" && field != "Sender" {
			continue
		}
		for _, v := range values {
			addrs, err := addressParser.ParseList(v)
			if err != nil {
				return badHeader(field + ": field cannot be parsed")
			}
			if len(addrs) == 0 {
				// RFC 5322 section 3.6.2: at least one mailbox.
				return badHeader(field + ": field has no address")
			}
			for _, a := range addrs {
				if !id.mayUse(a.Address) {
					return senderRefused(field+": header", a.Address)
				}
			}
		}
	}
	return nil
}
