package clientsetup

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"
)

// Server is smtpgate's SMTP side as mail clients see it.
type Server struct {
	Host            string // smtp.hostname
	SubmissionPort  int    // STARTTLS (587); 0: not offered
	SubmissionsPort int    // implicit TLS (465); 0: not offered
}

// validate checks what a client needs to connect: the host name and, if
// ports, a port.
func (s Server) validate(ports bool) error {
	var errs []error
	if s.Host == "" {
		errs = append(errs, errors.New("clientsetup: the SMTP host name is required"))
	}
	if ports && s.SubmissionPort == 0 && s.SubmissionsPort == 0 {
		errs = append(errs, errors.New("clientsetup: no SMTP port to offer"))
	}
	return errors.Join(errs...)
}

// maxAddress is the longest address DomainOf looks at (RFC 5321 section
// 4.5.3.1.3 limits a path to 256 octets).
const maxAddress = 256

// DomainOf returns the domain of an address a client sent, such as
// autoconfig's ?emailaddress=, lower-cased. It is strict: one bare
// addr-spec, no display name, no comments.
func DomainOf(address string) (string, error) {
	if address == "" {
		return "", errors.New("clientsetup: empty address")
	}
	if len(address) > maxAddress {
		return "", fmt.Errorf("clientsetup: address longer than %d bytes", maxAddress)
	}
	at := strings.LastIndexByte(address, '@')
	domain := strings.ToLower(address[at+1:])
	if at < 0 || !validHostname(domain) {
		return "", fmt.Errorf("clientsetup: %.80q does not end in @ and a domain name", address)
	}
	a, err := mail.ParseAddress(address)
	if err != nil || a.Name != "" || !strings.HasSuffix(strings.ToLower(a.Address), "@"+domain) {
		return "", fmt.Errorf("clientsetup: %.80q is not a bare mail address", address)
	}
	return domain, nil
}

// validHostname reports whether s is a DNS host name: dot-separated
// labels of letters, digits and hyphens, none longer than 63 octets, no
// hyphen at either end of a label (RFC 1123 section 2.1).
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
