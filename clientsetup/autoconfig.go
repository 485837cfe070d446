package clientsetup

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Autoconfig is the autoconfig: section of smtpgate's configuration: the
// mail domains whose autoconfig document smtpgate serves, and the incoming
// server to name in it.
type Autoconfig struct {
	// Domains are the mail domains answered; any other gets 404. Empty:
	// autoconfig is off.
	Domains []string `yaml:"domains,omitempty"`
	// Incoming is the IMAP or POP3 server, if any.
	Incoming *Incoming `yaml:"incoming,omitempty"`
}

// Incoming is the incoming mail server an autoconfig document names.
type Incoming struct {
	Type       string `yaml:"type,omitempty"`        // imap | pop3
	Hostname   string `yaml:"hostname,omitempty"`    // required
	Port       int    `yaml:"port,omitempty"`        // default 993 for imap, 995 for pop3
	SocketType string `yaml:"socket_type,omitempty"` // SSL | STARTTLS | plain; default SSL
	// Authentication is what the incoming server accepts, in Thunderbird's
	// words, best first. Default [password-cleartext]. With OAuth2 the
	// add-on lists the incoming host too, so the same sign-in serves it.
	Authentication []string `yaml:"authentication,omitempty"`
}

// authMethods are the <authentication> values of the autoconfig format.
var authMethods = []string{"OAuth2", "password-cleartext", "password-encrypted", "GSSAPI", "NTLM", "client-IP-address", "TLS-client-cert", "none"}

// Validate reports every problem at once. It also fills the defaults.
func (a *Autoconfig) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, d := range a.Domains {
		l := strings.ToLower(d)
		switch {
		case !validHostname(l):
			errs = append(errs, fmt.Errorf("autoconfig.domains[%d] %q: not a domain name", i, d))
		case seen[l]:
			errs = append(errs, fmt.Errorf("autoconfig.domains[%d] %q: listed twice", i, d))
		}
		seen[l] = true
		a.Domains[i] = l
	}
	in := a.Incoming
	if in == nil {
		return errors.Join(errs...)
	}
	if len(a.Domains) == 0 {
		errs = append(errs, errors.New("autoconfig.incoming needs autoconfig.domains"))
	}
	switch in.Type {
	case "imap":
		if in.Port == 0 {
			in.Port = 993
		}
	case "pop3":
		if in.Port == 0 {
			in.Port = 995
		}
	default:
		errs = append(errs, fmt.Errorf("autoconfig.incoming.type %q: want imap or pop3", in.Type))
	}
	if !validHostname(in.Hostname) {
		errs = append(errs, fmt.Errorf("autoconfig.incoming.hostname %q: not a host name", in.Hostname))
	}
	if in.Port < 0 || in.Port > 65535 {
		errs = append(errs, fmt.Errorf("autoconfig.incoming.port %d: out of range", in.Port))
	}
	switch in.SocketType {
	case "":
		in.SocketType = "SSL"
	case "SSL", "STARTTLS", "plain":
	default:
		errs = append(errs, fmt.Errorf("autoconfig.incoming.socket_type %q: want SSL, STARTTLS or plain", in.SocketType))
	}
	if len(in.Authentication) == 0 {
		in.Authentication = []string{"password-cleartext"}
	}
	for _, m := range in.Authentication {
		if !slices.Contains(authMethods, m) {
			errs = append(errs, fmt.Errorf("autoconfig.incoming.authentication %q: want one of %s", m, strings.Join(authMethods, ", ")))
		}
	}
	return errors.Join(errs...)
}

// Serves reports whether domain (lower case) is one of the configured
// domains.
func (a Autoconfig) Serves(domain string) bool { return slices.Contains(a.Domains, domain) }

// The autoconfig format, as Thunderbird reads it
// (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat).
type clientConfig struct {
	XMLName  xml.Name      `xml:"clientConfig"`
	Version  string        `xml:"version,attr"`
	Provider emailProvider `xml:"emailProvider"`
}

type emailProvider struct {
	ID               string         `xml:"id,attr"`
	Domain           string         `xml:"domain"`
	DisplayName      string         `xml:"displayName"`
	DisplayShortName string         `xml:"displayShortName"`
	Incoming         []serverConfig `xml:"incomingServer"`
	Outgoing         []serverConfig `xml:"outgoingServer"`
}

type serverConfig struct {
	Type           string   `xml:"type,attr"`
	Hostname       string   `xml:"hostname"`
	Port           int      `xml:"port"`
	SocketType     string   `xml:"socketType"`
	Authentication []string `xml:"authentication"`
	Username       string   `xml:"username"`
}

// AutoconfigXML returns the autoconfig document for domain, which must be
// one a.Serves. The outgoing server is listed twice, implicit TLS first
// (RFC 8314 section 3.3 prefers it), each offering OAuth2 before
// password-cleartext: Thunderbird takes OAuth2 when it knows a provider
// for the host (the add-on), and from version 123 falls back to a password
// (an app token) when it does not.
func AutoconfigXML(s Server, a Autoconfig, domain string) ([]byte, error) {
	if err := s.validate(true); err != nil {
		return nil, err
	}
	if !a.Serves(domain) {
		return nil, fmt.Errorf("clientsetup: %q is not an autoconfig domain", domain)
	}
	p := emailProvider{ID: domain, Domain: domain, DisplayName: domain + " mail", DisplayShortName: domain}
	if in := a.Incoming; in != nil {
		p.Incoming = append(p.Incoming, serverConfig{in.Type, in.Hostname, in.Port, in.SocketType, in.Authentication, "%EMAILADDRESS%"})
	}
	auth := []string{"OAuth2", "password-cleartext"}
	if s.SubmissionsPort != 0 {
		p.Outgoing = append(p.Outgoing, serverConfig{"smtp", s.Host, s.SubmissionsPort, "SSL", auth, "%EMAILADDRESS%"})
	}
	if s.SubmissionPort != 0 {
		p.Outgoing = append(p.Outgoing, serverConfig{"smtp", s.Host, s.SubmissionPort, "STARTTLS", auth, "%EMAILADDRESS%"})
	}
	var b bytes.Buffer
	b.WriteString(xml.Header)
	enc := xml.NewEncoder(&b)
	enc.Indent("", "  ")
	if err := enc.Encode(clientConfig{Version: "1.1", Provider: p}); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}
