package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// A saslServer is the server side of one SASL exchange (RFC 4422): Next
// takes the client's response (nil when there was no initial response)
// and returns a challenge, or done, or the error reply that ends it.
type saslServer interface {
	Next(response []byte) (challenge []byte, done bool, err error)
}

var _ saslServer = (*bearerServer)(nil)

// A session is the policy side of one connection: who authenticated, the
// mail transaction under way and its upstream connection. Only the
// connection's goroutine touches it; ctx is cancelled when the connection
// closes, from whichever goroutine closes it.
type session struct {
	srv    *Server
	c      *conn
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger

	ident *Identity // nil until AUTH succeeds

	// The mail transaction under way.
	txID     string
	from     string
	rcpts    []string
	smtputf8 bool
	start    time.Time
	up       *upstreamConn
}

func (s *session) tlsState() *tls.ConnectionState { return s.c.tlsState }

// authMechanisms lists the SASL mechanisms offered in EHLO: none before TLS
// unless insecure AUTH is allowed.
func (s *session) authMechanisms() []string {
	if s.tlsState() == nil && !s.srv.cfg.AllowInsecureAuth {
		return nil
	}
	mechs := []string{"OAUTHBEARER", "XOAUTH2"}
	if s.srv.cfg.Passwords != nil {
		mechs = append(mechs, "PLAIN", "LOGIN")
	}
	return mechs
}

func (s *session) auth(mech string) (saslServer, error) {
	if s.c.authFailures >= s.srv.cfg.MaxAuthFailures {
		s.log.Info("auth", "mech", mech, "result", "refused", "reason", "too many failures")
		return nil, errTooManyFailures
	}
	if s.tlsState() == nil && !s.srv.cfg.AllowInsecureAuth {
		return nil, errEncryptionRequired
	}
	switch mech {
	case "OAUTHBEARER":
		return &bearerServer{s: s, mech: mech, parse: parseOAuthBearer}, nil
	case "XOAUTH2":
		return &bearerServer{s: s, mech: mech, parse: parseXOAUTH2}, nil
	case "PLAIN", "LOGIN":
		if s.srv.cfg.Passwords != nil {
			return &passwordServer{s: s, mech: mech}, nil
		}
	}
	return nil, errUnknownMechanism
}

// A bearerServer is the server side of OAUTHBEARER (RFC 7628) and XOAUTH2.
type bearerServer struct {
	s       *session
	mech    string
	parse   func([]byte) (bearerResponse, error)
	asked   bool            // sent the empty challenge for a missing initial response
	failure *smtp.SMTPError // sent the error challenge; this ends the exchange
}

func (b *bearerServer) Next(resp []byte) ([]byte, bool, error) {
	if b.failure != nil {
		// RFC 7628 section 3.2.3: the client answers the error challenge
		// with %x01. Clients also send an empty line or "="; whatever it
		// is, the exchange ends in failure. ("*" never gets here: the
		// engine answers it with 501.)
		return nil, false, b.failure
	}
	if resp == nil && !b.asked {
		b.asked = true
		return []byte{}, false, nil
	}
	s := b.s
	msg, err := b.parse(resp)
	if err != nil {
		s.authFailed(b.mech, "", "malformed response: "+err.Error())
		return nil, false, malformed(b.mech, err.Error())
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.AuthTimeout)
	defer cancel()
	id, err := s.srv.cfg.Tokens.VerifyToken(ctx, msg.token)
	if err != nil {
		ae, ok := errors.AsType[*AuthError](err)
		if !ok {
			ae = &AuthError{Temporary: true, Reason: err.Error()}
		}
		if ae.Temporary {
			s.log.Warn("auth", "mech", b.mech, "user", logUser(msg.authzid), "result", "unavailable", "reason", ae.Reason, "tls", s.tlsVersion())
			return nil, false, errAuthUnavailable
		}
		s.authFailed(b.mech, msg.authzid, ae.Reason)
		b.failure = errAuthFailed
		return b.errorChallenge(ae), false, nil
	}
	if msg.authzid != "" && !id.mayUse(msg.authzid) {
		s.authFailed(b.mech, msg.authzid, "authorization identity is not an address of the token's subject "+id.Subject)
		return nil, false, &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8},
			Message: "The token is valid, but not for " + printable(msg.authzid)}
	}
	s.authSucceeded(b.mech, msg.authzid, id)
	return nil, true, nil
}

// errorChallenge is the JSON the server sends in its 334 failure reply:
// RFC 7628 section 3.2.2 for OAUTHBEARER, Google's format for XOAUTH2.
func (b *bearerServer) errorChallenge(ae *AuthError) []byte {
	status := ae.Status
	if status == "" {
		status = "invalid_token"
	}
	var v any
	if b.mech == "XOAUTH2" {
		code := map[string]string{"invalid_token": "401", "insufficient_scope": "403"}[status]
		if code == "" {
			code = "400"
		}
		v = struct {
			Status  string `json:"status"`
			Schemes string `json:"schemes"`
			Scope   string `json:"scope,omitempty"`
		}{code, "bearer", ae.Scope}
	} else {
		v = struct {
			Status string `json:"status"`
			Scope  string `json:"scope,omitempty"`
			Config string `json:"openid-configuration,omitempty"`
		}{status, ae.Scope, ae.DiscoveryURL}
	}
	out, _ := json.Marshal(v)
	return out
}

// authFailed counts and logs a failed AUTH, and holds the reply back when
// the client's address keeps failing.
func (s *session) authFailed(mech, user, reason string) {
	s.c.authFailures++
	delay := s.srv.slow.fail(s.remoteIP())
	s.log.Info("auth", "mech", mech, "user", logUser(user), "result", "failed", "reason", reason,
		"failures", s.c.authFailures, "delay", delay, "tls", s.tlsVersion())
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
	}
}

func (s *session) authSucceeded(mech, user string, id Identity) {
	s.ident = &id
	address := ""
	if len(id.Addresses) > 0 {
		address = id.Addresses[0]
	}
	s.log.Info("auth", "mech", mech, "user", logUser(user), "result", "ok", "subject", id.Subject,
		"address", address, "tls", s.tlsVersion())
}

func (s *session) remoteIP() string {
	addr := s.c.raw.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

func (s *session) tlsVersion() string {
	if st := s.tlsState(); st != nil {
		return tls.VersionName(st.Version)
	}
	return "none"
}

// mail starts a transaction: the sender policy, the credential still
// live, the per-identity limit, then MAIL at the upstream.
func (s *session) mail(from string, p mailParams) error {
	if s.srv.closing.Load() {
		return errShuttingDown
	}
	if from == "" {
		return errNullSender
	}
	if err := s.credentialLive(); err != nil {
		return err
	}
	if !s.ident.mayUse(from) {
		s.log.Info("sender refused", "rule", "envelope", "from", from, "subject", s.ident.Subject)
		return senderRefused("MAIL FROM", from)
	}
	if !s.srv.beginTransaction(s.ident.Subject) {
		s.log.Warn("transaction refused", "reason", "too many transactions for one identity",
			"subject", s.ident.Subject, "limit", s.srv.cfg.MaxTransactionsPerIdentity)
		return errTooManyTransactions
	}
	fwd := &smtp.MailOptions{Body: smtp.BodyType(p.body), Size: p.size, UTF8: p.smtputf8}
	up, err := s.srv.relay.mail(s.ctx, from, fwd)
	if err != nil {
		s.srv.endTransaction(s.ident.Subject)
		return err
	}
	s.up, s.from, s.rcpts, s.smtputf8, s.txID, s.start = up, from, nil, p.smtputf8, newID(), time.Now()
	s.c.inTx.Store(true)
	return nil
}

// credentialLive re-checks, at each MAIL, that the credential has not
// expired or been revoked since AUTH.
func (s *session) credentialLive() error {
	id := s.ident
	if !id.Expires.IsZero() && time.Now().After(id.Expires) {
		s.log.Info("credential expired", "subject", id.Subject, "expired", id.Expires)
		return errCredentialExpired
	}
	if s.srv.cfg.Credentials == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.AuthTimeout)
	defer cancel()
	err := s.srv.cfg.Credentials.CheckCredential(ctx, *id)
	if err == nil {
		return nil
	}
	if ae, ok := errors.AsType[*AuthError](err); ok && !ae.Temporary {
		s.log.Info("credential no longer valid", "subject", id.Subject, "reason", ae.Reason)
		return errCredentialExpired
	}
	s.log.Warn("credential check unavailable", "subject", id.Subject, "err", err)
	return errAuthUnavailable
}

func (s *session) rcpt(to string) error {
	if s.up == nil {
		return errUpstreamLost
	}
	err := s.up.c.Rcpt(to, nil)
	if err == nil {
		s.rcpts = append(s.rcpts, to)
		return nil
	}
	reply, broken := replyOf(err)
	if broken {
		s.log.Warn("upstream lost at RCPT", "id", s.txID, "err", err)
		s.srv.relay.release(s.up, true)
		s.up = nil
		return reply
	}
	s.log.Info("recipient refused upstream", "id", s.txID, "rcpt", to, "upstream_reply", err.Error())
	return reply
}

// data relays the message r delivers and returns the reply for the client.
// When reading r fails (the client went away, or sent too much) it stops
// at once; the engine then picks the reply.
func (s *session) data(r *dataReader) error {
	up := s.up
	s.up = nil
	defer s.endTx()
	if up == nil {
		return errUpstreamLost
	}
	n, text, err := s.relayData(up, r)
	if err != nil {
		reply := err.Error()
		if r.err != nil && r.err != io.EOF {
			reply = "client: " + r.err.Error()
		}
		s.log.Info("message", "id", s.txID, "from", s.from, "rcpts", s.rcpts, "bytes", n,
			"result", "failed", "reply", reply, "duration", time.Since(s.start))
		return err
	}
	s.log.Info("message", "id", s.txID, "from", s.from, "rcpts", s.rcpts, "bytes", n,
		"result", "relayed", "upstream_reply", text, "duration", time.Since(s.start))
	return upstreamOK(text)
}

// relayData checks the header and streams the message to the upstream. It
// returns the upstream's reply text, or the reply for the client.
func (s *session) relayData(up *upstreamConn, r *dataReader) (n int64, text string, err error) {
	broken := true
	defer func() { s.srv.relay.release(up, broken) }()

	cfg := &s.srv.cfg
	bufs := s.srv.bufs.Get().(*dataBuf)
	defer s.srv.bufs.Put(bufs)
	br := bufs.r
	br.Reset(r)
	defer br.Reset(nil)
	header, rest, err := readHeader(br, cfg.MaxHeaderBytes)
	if err != nil {
		if errors.Is(err, errHeaderLimit) {
			broken = false // nothing was sent: RSET keeps the connection
			return 0, "", errHeaderTooLarge
		}
		return 0, "", errDataIncomplete
	}
	if e := checkHeader(s.ident, header, s.smtputf8); e != nil {
		broken = false
		s.log.Info("sender refused", "rule", "header", "id", s.txID, "reason", e.Message, "subject", s.ident.Subject)
		return 0, "", e
	}

	w, err := s.srv.relay.data(up)
	if err != nil {
		reply, brk := replyOf(err)
		broken = brk
		if brk {
			s.log.Warn("upstream lost at DATA", "id", s.txID, "err", err)
		}
		return 0, "", reply
	}
	defer w.free()
	if _, err := w.Write(receivedHeader(s.c.helo, s.c.raw.RemoteAddr(), cfg.Hostname, s.txID, s.tlsState(), s.rcpts, time.Now())); err != nil {
		return 0, "", s.upstreamWriteErr(err)
	}
	n = int64(len(header) + len(rest))
	if _, err := w.Write(header); err != nil {
		return n, "", s.upstreamWriteErr(err)
	}
	if _, err := w.Write(rest); err != nil {
		return n, "", s.upstreamWriteErr(err)
	}
	buf := bufs.copy[:]
	for {
		m, rerr := br.Read(buf)
		if m > 0 {
			n += int64(m)
			if _, err := w.Write(buf[:m]); err != nil {
				return n, "", s.upstreamWriteErr(err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// The client went away, stalled, or sent too much: the
			// upstream connection is closed without the final dot, so
			// the upstream discards the partial message.
			return n, "", errDataIncomplete
		}
	}
	text, reply, brk := w.finish()
	broken = brk
	if reply != nil {
		if brk {
			s.log.Warn("upstream lost after final dot", "id", s.txID, "err", reply)
		}
		return n, "", reply
	}
	up.dirty = false
	return n, text, nil
}

func (s *session) upstreamWriteErr(err error) error {
	s.log.Warn("upstream lost during DATA", "id", s.txID, "err", err)
	return errUpstreamLost
}

// upstreamOK is the client's 250 reply, carrying the upstream's text (its
// queue ID helps trace the message).
func upstreamOK(text string) *smtp.SMTPError {
	code := smtp.EnhancedCode{2, 0, 0}
	if c, rest, ok := strings.Cut(text, " "); ok && strings.Count(c, ".") == 2 && strings.HasPrefix(c, "2.") {
		text = rest
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: code, Message: text}
}

// reset aborts the transaction under way, if any.
func (s *session) reset() {
	if s.up != nil {
		s.srv.relay.release(s.up, false)
		s.up = nil
	}
	s.endTx()
}

func (s *session) endTx() {
	if s.c.inTx.Swap(false) {
		s.srv.endTransaction(s.ident.Subject)
	}
	s.from, s.rcpts, s.smtputf8 = "", nil, false
}

// logout ends the session when the connection is gone.
func (s *session) logout() {
	s.cancel()
	if s.up != nil {
		s.srv.relay.release(s.up, true)
		s.up = nil
	}
	s.endTx()
}

// dataBuf holds the buffers one message needs, reused across messages.
type dataBuf struct {
	r    *bufio.Reader
	copy [32 << 10]byte
}

func newDataBuf() any { return &dataBuf{r: bufio.NewReaderSize(nil, 32<<10)} }

// logUser is a client-given user name fit for the log. A user name is a
// mail address; a long one without "@" is most likely a secret typed into
// the wrong field (an app token as the user name, the fields swapped), and
// is logged only by its length.
func logUser(u string) string {
	if len(u) >= 20 && !strings.Contains(u, "@") {
		return fmt.Sprintf("REDACTED (%d characters, not an address)", len(u))
	}
	return printable(u)
}

// newID returns a short random transaction ID for the Received header and
// the log.
func newID() string {
	return rand.Text()[:12]
}

// printable keeps client input fit for a one-line reply.
func printable(s string) string {
	if len(s) > 128 {
		s = s[:128]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
