package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
	_ sasl.Server      = (*bearerServer)(nil)
)

// A session is one SMTP conversation. go-smtp passes no context, so the
// session owns one: made in newSession, cancelled in Logout.
type session struct {
	srv    *Server
	c      *smtp.Conn
	tc     *trackedConn
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger

	ident *Identity // nil until AUTH succeeds

	// The mail transaction under way.
	txID  string
	from  string
	rcpts []string
	start time.Time
	// up is the transaction's upstream connection. go-smtp may call
	// Logout from another goroutine (Server.Close) while a command runs,
	// so up is only touched under upMu.
	upMu sync.Mutex
	up   *upstreamConn
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	tc := connOf(c.Conn())
	if tc == nil {
		return nil, errors.New("gateway: connection not accepted by a gateway listener")
	}
	top := c.Conn()
	tc.top.Store(&top)
	ctx, cancel := context.WithCancel(context.Background())
	return &session{
		srv:    s,
		c:      c,
		tc:     tc,
		ctx:    ctx,
		cancel: cancel,
		log:    s.log.With("conn", tc.id, "remote", tc.RemoteAddr().String()),
	}, nil
}

func (s *session) tlsState() *tls.ConnectionState {
	if st, ok := s.c.TLSConnectionState(); ok {
		return &st
	}
	return nil
}

// AuthMechanisms lists the SASL mechanisms offered in EHLO: none before TLS
// unless insecure AUTH is allowed.
func (s *session) AuthMechanisms() []string {
	if s.tlsState() == nil && !s.srv.cfg.AllowInsecureAuth {
		return nil
	}
	mechs := []string{"OAUTHBEARER", "XOAUTH2"}
	if s.srv.cfg.Passwords != nil {
		mechs = append(mechs, "PLAIN", "LOGIN")
	}
	return mechs
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.tc.authFailures >= s.srv.cfg.MaxAuthFailures {
		s.log.Info("auth", "mech", mech, "result", "refused", "reason", "too many failures")
		s.tc.closeAfterWrite.Store(true)
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
		// is, the exchange ends in failure. ("*" never gets here: go-smtp
		// answers it with 501.)
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
			s.log.Warn("auth", "mech", b.mech, "user", msg.authzid, "result", "unavailable", "reason", ae.Reason, "tls", s.tlsVersion())
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
	s.tc.authFailures++
	delay := s.srv.slow.fail(s.remoteIP())
	s.log.Info("auth", "mech", mech, "user", user, "result", "failed", "reason", reason,
		"failures", s.tc.authFailures, "delay", delay, "tls", s.tlsVersion())
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
	s.log.Info("auth", "mech", mech, "user", user, "result", "ok", "subject", id.Subject,
		"address", address, "tls", s.tlsVersion())
}

func (s *session) remoteIP() string {
	addr := s.tc.RemoteAddr().String()
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

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.ident == nil {
		return errAuthRequired
	}
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if s.up != nil {
		// go-smtp passes a second MAIL through; taking another upstream
		// connection would leak the first one's slot.
		return errNestedMail
	}
	if s.srv.closing.Load() {
		s.tc.closeAfterWrite.Store(true)
		return errShuttingDown
	}
	if from == "" {
		return errNullSender
	}
	if !s.ident.mayUse(from) {
		s.log.Info("sender refused", "rule", "envelope", "from", from, "subject", s.ident.Subject)
		return senderRefused("MAIL FROM", from)
	}
	s.tc.busy.Store(true)
	up, err := s.srv.relay.mail(s.ctx, from, opts)
	if err != nil {
		s.tc.busy.Store(false)
		return err
	}
	if s.ctx.Err() != nil { // Logout ran meanwhile
		s.srv.relay.release(up, false)
		return errUpstreamLost
	}
	s.up, s.from, s.rcpts, s.txID, s.start = up, from, nil, newID(), time.Now()
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if s.up == nil {
		return errUpstreamLost
	}
	err := s.up.c.Rcpt(to, opts)
	if err == nil {
		s.rcpts = append(s.rcpts, to)
		return nil
	}
	if se, ok := errors.AsType[*smtp.SMTPError](err); ok {
		s.log.Info("recipient refused upstream", "id", s.txID, "rcpt", to, "upstream_reply", se.Error())
		return se
	}
	s.log.Warn("upstream lost at RCPT", "id", s.txID, "err", err)
	s.srv.relay.release(s.up, true)
	s.up = nil
	return errUpstreamLost
}

func (s *session) Data(r io.Reader) error {
	up := s.takeUp()
	if up == nil {
		return errUpstreamLost
	}
	defer s.endTx()
	n, reply, err := s.relayData(up, r)
	if err != nil {
		s.log.Info("message", "id", s.txID, "from", s.from, "rcpts", s.rcpts, "bytes", n,
			"result", "failed", "reply", err.Error(), "duration", time.Since(s.start))
		return err
	}
	s.log.Info("message", "id", s.txID, "from", s.from, "rcpts", s.rcpts, "bytes", n,
		"result", "relayed", "upstream_reply", reply.Message, "duration", time.Since(s.start))
	return reply
}

// relayData checks the header and streams the message to the upstream. It
// returns the reply for the client: the upstream's own, or one of ours.
func (s *session) relayData(up *upstreamConn, r io.Reader) (n int64, reply *smtp.SMTPError, err error) {
	broken := true
	defer func() { s.srv.relay.release(up, broken) }()

	cfg := &s.srv.cfg
	bufs := s.srv.bufs.Get().(*dataBuf)
	defer s.srv.bufs.Put(bufs)
	br := bufs.r
	br.Reset(&deadlineReader{r: r, conn: s.c.Conn(), timeout: cfg.ReadTimeout})
	defer br.Reset(nil)
	header, rest, err := readHeader(br, cfg.MaxHeaderBytes)
	if err != nil {
		if errors.Is(err, errHeaderLimit) {
			broken = false // nothing was sent: RSET keeps the connection
			return 0, nil, errHeaderTooLarge
		}
		return 0, nil, clientDataErr(err)
	}
	if e := checkHeader(s.ident, header); e != nil {
		broken = false
		s.log.Info("sender refused", "rule", "header", "id", s.txID, "reason", e.Message, "subject", s.ident.Subject)
		return 0, nil, e
	}

	w, err := up.c.Data()
	if err != nil {
		if se, ok := errors.AsType[*smtp.SMTPError](err); ok {
			broken = false
			return 0, nil, se
		}
		s.log.Warn("upstream lost at DATA", "id", s.txID, "err", err)
		return 0, nil, errUpstreamLost
	}
	uw := &deadlineWriter{w: w, conn: up.conn, timeout: s.srv.cfg.Upstream.CommandTimeout}
	cw := &crlfWriter{w: uw}
	if _, err := uw.Write(receivedHeader(s.c.Hostname(), s.tc.RemoteAddr(), cfg.Hostname, s.txID, s.tlsState(), s.rcpts, time.Now())); err != nil {
		return 0, nil, s.upstreamWriteErr(err)
	}
	n = int64(len(header) + len(rest))
	if _, err := cw.Write(append(header, rest...)); err != nil {
		return n, nil, s.upstreamWriteErr(err)
	}
	buf := bufs.copy[:]
	for {
		m, rerr := br.Read(buf)
		if m > 0 {
			n += int64(m)
			if _, err := cw.Write(buf[:m]); err != nil {
				return n, nil, s.upstreamWriteErr(err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// The client went away or sent too much: the upstream
			// connection is closed without the final dot, so the
			// upstream discards the partial message.
			return n, nil, clientDataErr(rerr)
		}
	}
	if err := cw.Close(); err != nil {
		return n, nil, s.upstreamWriteErr(err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		if se, ok := errors.AsType[*smtp.SMTPError](err); ok {
			up.dirty, broken = false, false
			return n, nil, se
		}
		// Without the upstream's reply the message may or may not have
		// been accepted. 451 risks a duplicate; 250 risks a loss.
		s.log.Warn("upstream lost after final dot", "id", s.txID, "err", err)
		return n, nil, errUpstreamLost
	}
	up.dirty, broken = false, false
	return n, upstreamOK(resp.StatusText), nil
}

func (s *session) upstreamWriteErr(err error) error {
	s.log.Warn("upstream lost during DATA", "id", s.txID, "err", err)
	return errUpstreamLost
}

// clientDataErr maps an error reading the client's message to a reply.
func clientDataErr(err error) error {
	if se, ok := errors.AsType[*smtp.SMTPError](err); ok {
		return se // ErrDataTooLarge
	}
	if errors.Is(err, smtp.ErrTooLongLine) {
		return errLineTooLong
	}
	return err // the client is gone; the reply goes nowhere
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

// takeUp hands the transaction's upstream connection to the caller.
func (s *session) takeUp() *upstreamConn {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	up := s.up
	s.up = nil
	return up
}

func (s *session) Reset() {
	if up := s.takeUp(); up != nil {
		s.srv.relay.release(up, false)
	}
	s.endTx()
}

func (s *session) endTx() {
	s.from, s.rcpts = "", nil
	if s.tc.busy.Swap(false) && s.srv.closing.Load() {
		// Shutdown is waiting for this transaction: say goodbye after the
		// reply.
		s.tc.closeAfterWrite.Store(true)
	}
}

// Logout may run on another goroutine than the commands (go-smtp's
// Server.Close), so it touches only the context, the upstream connection
// (under upMu) and atomics.
func (s *session) Logout() error {
	s.cancel()
	if up := s.takeUp(); up != nil {
		s.srv.relay.release(up, false)
	}
	s.tc.busy.Store(false)
	return nil
}

// dataBuf holds the buffers one message needs, reused across messages.
type dataBuf struct {
	r    *bufio.Reader
	copy [32 << 10]byte
}

func newDataBuf() any { return &dataBuf{r: bufio.NewReaderSize(nil, 32<<10)} }

// A deadlineReader extends the read deadline while a message arrives, so
// ReadTimeout bounds silence rather than the whole transfer.
type deadlineReader struct {
	r       io.Reader
	conn    net.Conn
	timeout time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	d.conn.SetReadDeadline(time.Now().Add(d.timeout))
	return d.r.Read(p)
}

// A deadlineWriter does the same for writes to the upstream.
type deadlineWriter struct {
	w       io.Writer
	conn    net.Conn
	timeout time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.w.Write(p)
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
