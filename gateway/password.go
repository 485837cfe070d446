package gateway

import (
	"bytes"
	"context"
	"errors"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

var _ sasl.Server = (*passwordServer)(nil)

// A passwordServer is the server side of PLAIN (RFC 4616) and LOGIN, for
// clients that send an app token as the password. LOGIN has no RFC; it
// prompts "Username:" then "Password:", and some clients put the username
// on the AUTH line.
type passwordServer struct {
	s        *session
	mech     string
	step     int
	username string
}

var (
	loginUsername = []byte("Username:")
	loginPassword = []byte("Password:")
)

func (p *passwordServer) Next(resp []byte) ([]byte, bool, error) {
	if p.mech == "LOGIN" {
		switch {
		case p.step == 0 && resp == nil:
			p.step = 1
			return loginUsername, false, nil
		case p.step <= 1:
			p.step, p.username = 2, string(resp)
			return loginPassword, false, nil
		}
		return p.check("", p.username, string(resp))
	}
	if resp == nil && p.step == 0 {
		p.step = 1
		return []byte{}, false, nil
	}
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 {
		p.s.authFailed(p.mech, "", "malformed PLAIN response")
		return nil, false, malformed(p.mech, "want authzid NUL username NUL password")
	}
	return p.check(string(parts[0]), string(parts[1]), string(parts[2]))
}

func (p *passwordServer) check(authzid, username, password string) ([]byte, bool, error) {
	s := p.s
	if username == "" || password == "" {
		s.authFailed(p.mech, username, "empty username or password")
		return nil, false, errAuthFailed
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.AuthTimeout)
	defer cancel()
	id, err := s.srv.cfg.Passwords.CheckPassword(ctx, username, password, s.remoteIP())
	if err != nil {
		ae, ok := errors.AsType[*AuthError](err)
		if !ok || ae.Temporary {
			reason := err.Error()
			if ok {
				reason = ae.Reason
			}
			s.log.Warn("auth", "mech", p.mech, "user", logUser(username), "result", "unavailable", "reason", reason, "tls", s.tlsVersion())
			return nil, false, errAuthUnavailable
		}
		s.authFailed(p.mech, username, ae.Reason)
		return nil, false, errAuthFailed
	}
	if authzid != "" && !id.mayUse(authzid) {
		s.authFailed(p.mech, username, "authorization identity is not an address of "+id.Subject)
		return nil, false, &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8},
			Message: "The password is valid, but not for " + printable(authzid)}
	}
	s.authSucceeded(p.mech, username, id)
	return nil, true, nil
}
