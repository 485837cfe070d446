package clientsetup

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Profile is what an Apple configuration profile for one person's mail
// account holds.
type Profile struct {
	Email    string // the address, also the SMTP username
	Password string // an app token created for this profile
	Name     string // the person's name, may be empty
	// ProfileUUID and PayloadUUID identify the profile and its mail
	// payload: random, upper-case RFC 4122 form.
	ProfileUUID, PayloadUUID string
}

var uuidRE = regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$`)

// Mobileconfig returns an Apple configuration profile (.mobileconfig, an
// XML property list) with one com.apple.mail.managed payload: the incoming
// server from a, the outgoing server s with implicit TLS when offered
// (else STARTTLS), and the app token as the SMTP password. Apple's mail
// payload requires an incoming server, so a.Incoming must be set. The
// profile is unsigned; the device says so when it is installed.
func Mobileconfig(s Server, a Autoconfig, p Profile) ([]byte, error) {
	var errs []error
	if err := s.validate(true); err != nil {
		errs = append(errs, err)
	}
	in := a.Incoming
	if in == nil {
		errs = append(errs, errors.New("clientsetup: a mail profile needs autoconfig.incoming (Apple's mail payload requires an incoming server)"))
	}
	if _, err := DomainOf(p.Email); err != nil {
		errs = append(errs, err)
	}
	if p.Password == "" {
		errs = append(errs, errors.New("clientsetup: a mail profile needs a password"))
	}
	if !uuidRE.MatchString(p.ProfileUUID) || !uuidRE.MatchString(p.PayloadUUID) || p.ProfileUUID == p.PayloadUUID {
		errs = append(errs, errors.New("clientsetup: a mail profile needs two distinct upper-case UUIDs"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	port, ssl := s.SubmissionsPort, true
	if port == 0 {
		port, ssl = s.SubmissionPort, false // STARTTLS: Apple Mail upgrades when offered
	}
	accountType := "EmailTypeIMAP"
	if in.Type == "pop3" {
		accountType = "EmailTypePOP"
	}
	id := "smtpgate." + reverse(s.Host) + "." + strings.ReplaceAll(strings.ToLower(p.Email), "@", ".")
	mailPayload := dict{
		{"PayloadType", "com.apple.mail.managed"},
		{"PayloadVersion", 1},
		{"PayloadIdentifier", id + ".mail"},
		{"PayloadUUID", p.PayloadUUID},
		{"PayloadDisplayName", "Mail: " + p.Email},
		{"EmailAccountDescription", p.Email},
		{"EmailAccountName", p.Name},
		{"EmailAccountType", accountType},
		{"EmailAddress", p.Email},
		{"IncomingMailServerAuthentication", "EmailAuthPassword"},
		{"IncomingMailServerHostName", in.Hostname},
		{"IncomingMailServerPortNumber", in.Port},
		{"IncomingMailServerUseSSL", in.SocketType != "plain"},
		{"IncomingMailServerUsername", p.Email},
		{"OutgoingMailServerAuthentication", "EmailAuthPassword"},
		{"OutgoingMailServerHostName", s.Host},
		{"OutgoingMailServerPortNumber", port},
		{"OutgoingMailServerUseSSL", ssl},
		{"OutgoingMailServerUsername", p.Email},
		{"OutgoingPassword", p.Password},
		{"OutgoingPasswordSameAsIncomingPassword", false},
	}
	profile := dict{
		{"PayloadContent", []any{mailPayload}},
		{"PayloadDescription", "Sets up sending mail through " + s.Host + " with an app token. Revoke the token in the web app when you remove this profile."},
		{"PayloadDisplayName", "Mail for " + p.Email},
		{"PayloadIdentifier", id},
		{"PayloadOrganization", s.Host},
		{"PayloadRemovalDisallowed", false},
		{"PayloadType", "Configuration"},
		{"PayloadUUID", p.ProfileUUID},
		{"PayloadVersion", 1},
	}
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.WriteString(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n")
	b.WriteString(`<plist version="1.0">` + "\n")
	if err := writePlist(&b, profile, 0); err != nil {
		return nil, err
	}
	b.WriteString("</plist>\n")
	return b.Bytes(), nil
}

// reverse turns mail.example.com into com.example.mail, the reverse-DNS
// style of payload identifiers.
func reverse(host string) string {
	l := strings.Split(strings.ToLower(host), ".")
	for i, j := 0, len(l)-1; i < j; i, j = i+1, j-1 {
		l[i], l[j] = l[j], l[i]
	}
	return strings.Join(l, ".")
}

// A dict is a property-list dictionary with its keys in order.
type dict []kv

type kv struct {
	Key   string
	Value any // string, int, bool, dict or []any
}

// writePlist writes v in Apple's XML property list format (PropertyList-1.0.dtd).
func writePlist(b *bytes.Buffer, v any, depth int) error {
	indent := strings.Repeat("\t", depth)
	esc := func(s string) {
		xml.EscapeText(b, []byte(s))
	}
	switch v := v.(type) {
	case string:
		b.WriteString(indent + "<string>")
		esc(v)
		b.WriteString("</string>\n")
	case int:
		fmt.Fprintf(b, "%s<integer>%d</integer>\n", indent, v)
	case bool:
		if v {
			b.WriteString(indent + "<true/>\n")
		} else {
			b.WriteString(indent + "<false/>\n")
		}
	case []any:
		b.WriteString(indent + "<array>\n")
		for _, e := range v {
			if err := writePlist(b, e, depth+1); err != nil {
				return err
			}
		}
		b.WriteString(indent + "</array>\n")
	case dict:
		b.WriteString(indent + "<dict>\n")
		for _, e := range v {
			b.WriteString(indent + "\t<key>")
			esc(e.Key)
			b.WriteString("</key>\n")
			if err := writePlist(b, e.Value, depth+1); err != nil {
				return err
			}
		}
		b.WriteString(indent + "</dict>\n")
	default:
		return fmt.Errorf("clientsetup: plist: unsupported type %T", v)
	}
	return nil
}
