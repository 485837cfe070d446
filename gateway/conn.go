package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

var (
	errTooManyFiles = syscall.EMFILE
	// errShutdownIdle ends a connection waiting between transactions when
	// the server shuts down.
	errShutdownIdle = errors.New("gateway: shutting down")
)

// Command line limits, the line ending included. RFC 5321 section
// 4.5.3.1.4 allows 512 octets for a command line; MAIL and RCPT get room
// for their ESMTP parameters (RFC 4954 section 5 alone adds 500 for AUTH=).
// Only AUTH lines and SASL responses carry tokens and may be as long as
// Config.MaxLineLength.
const (
	commandLineLimit  = 512
	envelopeLineLimit = 2048
)

// A conn is one client connection: the engine's state machine. It reads
// commands, writes replies (buffered, and flushed only when the client has
// nothing more pipelined, RFC 2920), and leaves policy and relaying to its
// session.
type conn struct {
	srv         *Server
	raw         net.Conn // the TCP connection; never replaced
	nc          net.Conn // raw, or TLS over it
	implicitTLS bool
	tlsState    *tls.ConnectionState
	id          string
	client      netip.Prefix
	started     time.Time
	refused     *smtp.SMTPError // a connection limit was hit: say so and close
	log         *slog.Logger

	in  connReader
	out []byte

	helo         string // the name the client gave in HELO or EHLO; "" before
	sess         *session
	commands     int // commands before a successful AUTH
	authFailures int
	readUntil    time.Time
	readReason   *smtp.SMTPError // what to tell a client that hit readUntil
	inTx         atomic.Bool     // a mail transaction is under way
	closeOnce    sync.Once
	closing      bool // reply, then close
}

// interrupt wakes a connection blocked reading, so that it can see the
// server is shutting down. A connection in a transaction carries on.
func (c *conn) interrupt() { c.raw.SetReadDeadline(time.Now()) }

// start readies an accepted connection; serve then runs it.
func (c *conn) start() {
	c.log = c.srv.log.With("conn", c.id, "remote", c.raw.RemoteAddr().String())
	ctx, cancel := context.WithCancel(context.Background())
	c.sess = &session{srv: c.srv, c: c, ctx: ctx, cancel: cancel, log: c.log}
	c.in = connReader{rd: c, buf: make([]byte, smallBufSize), beforeRead: c.beforeRead, pool: bufPool{&c.srv.dataBufs}}
}

// close ends the connection from any goroutine; the session's context is
// cancelled, which also closes its upstream connection.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.raw.Close()
		if c.sess != nil {
			c.sess.cancel()
		}
	})
}

// Read is the connReader's source. A read interrupted by Shutdown returns
// errShutdownIdle between transactions and is resumed inside one.
func (c *conn) Read(p []byte) (int, error) {
	for range 100 {
		n, err := c.nc.Read(p)
		if err != nil && c.srv.closing.Load() && time.Now().Before(c.readUntil) {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				if !c.inTx.Load() {
					return n, errShutdownIdle
				}
				c.nc.SetReadDeadline(c.readUntil)
				if n > 0 {
					return n, nil
				}
				continue
			}
		}
		return n, err
	}
	return 0, io.ErrNoProgress
}

// beforeRead runs whenever the connection is about to wait for the client:
// it sends the replies held back for pipelining and sets the read deadline
// to the nearest of the limits that apply.
func (c *conn) beforeRead() error {
	if err := c.flush(); err != nil {
		return err
	}
	cfg := &c.srv.cfg
	now := time.Now()
	until, why := now.Add(cfg.ReadTimeout), errIdleTimeout
	if c.sess.ident == nil {
		if t := c.started.Add(cfg.PreAuthTimeout); t.Before(until) {
			until, why = t, errPreAuthTimeout
		}
	}
	if t := c.started.Add(cfg.MaxSessionDuration); t.Before(until) {
		until, why = t, errSessionTooLong
	}
	if c.inTx.Load() {
		if t := c.sess.start.Add(cfg.TransactionTimeout); t.Before(until) {
			until, why = t, errTransactionTooLong
		}
	}
	c.readUntil, c.readReason = until, why
	c.nc.SetReadDeadline(until)
	if c.srv.closing.Load() && !c.inTx.Load() {
		return errShutdownIdle
	}
	return nil
}

// reply queues a reply. Multi-line texts become continuation lines, each
// with the code and, for 2xx, 4xx and 5xx, the RFC 3463 enhanced code
// (RFC 2034).
func (c *conn) reply(e *smtp.SMTPError) {
	enh := ""
	ec := e.EnhancedCode
	switch class := e.Code / 100; {
	case class == 4 || class == 5:
		if ec == (smtp.EnhancedCode{}) || ec == smtp.NoEnhancedCode {
			ec = smtp.EnhancedCode{class, 0, 0}
		}
		fallthrough
	case class == 2 && ec != (smtp.EnhancedCode{}) && ec != smtp.NoEnhancedCode:
		enh = fmt.Sprintf("%d.%d.%d ", ec[0], ec[1], ec[2])
	}
	lines := strings.Split(e.Message, "\n")
	for i, l := range lines {
		sep := byte(' ')
		if i < len(lines)-1 {
			sep = '-'
		}
		c.out = strconv.AppendInt(c.out, int64(e.Code), 10)
		c.out = append(c.out, sep)
		c.out = append(c.out, enh...)
		c.out = append(c.out, strings.TrimRight(l, "\r")...)
		c.out = append(c.out, '\r', '\n')
	}
	if len(c.out) > 4096 {
		c.flush()
	}
}

// replyf queues a reply with an enhanced code and a formatted text.
func (c *conn) replyf(code int, enh smtp.EnhancedCode, format string, args ...any) {
	c.reply(&smtp.SMTPError{Code: code, EnhancedCode: enh, Message: fmt.Sprintf(format, args...)})
}

// flush writes the queued replies.
func (c *conn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	_, err := c.nc.Write(c.out)
	if cap(c.out) > 1024 {
		c.out = nil // an EHLO or a long upstream reply: don't keep it
	} else {
		c.out = c.out[:0]
	}
	return err
}

func (c *conn) serve() {
	defer func() {
		c.flush()
		c.close()
		if c.sess != nil {
			c.sess.logout()
		}
		c.in.release()
		c.srv.forget(c)
		c.srv.running.Done()
	}()
	if c.refused != nil {
		c.refuse()
		return
	}
	if c.implicitTLS {
		if !c.handshake() {
			return
		}
	}
	c.replyf(220, smtp.EnhancedCode{}, "%s ESMTP smtpgate ready", c.srv.cfg.Hostname)
	for !c.closing {
		line, err := c.in.readLine(c.lineLimit)
		switch {
		case errors.Is(err, errLineTooLong):
			c.replyf(500, smtp.EnhancedCode{5, 5, 6}, "Line too long (the limit is %d octets for this command)", c.lineLimit(nil))
			continue
		case err != nil:
			c.readFailed(err)
			return
		}
		c.command(string(line))
	}
}

// refuse answers a connection beyond a limit with 421 and closes it. On
// port 465 the reply needs TLS; the handshake gets a few seconds.
func (c *conn) refuse() {
	c.srv.log.Info("connection refused", "remote", c.raw.RemoteAddr().String(), "reason", c.refused.Message)
	if c.implicitTLS {
		c.raw.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(c.raw, c.srv.cfg.TLSConfig)
		if tc.Handshake() != nil {
			return
		}
		c.nc = tc
	}
	c.reply(c.refused)
}

// handshake runs the server side of a TLS handshake, bounded by the read
// timeout, and records the result.
func (c *conn) handshake() bool {
	tc := tls.Server(c.raw, c.srv.cfg.TLSConfig)
	c.raw.SetDeadline(time.Now().Add(min(c.srv.cfg.ReadTimeout, time.Minute)))
	if err := tc.Handshake(); err != nil {
		c.log.Debug("tls handshake failed", "err", err)
		return false
	}
	c.raw.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	c.nc, c.tlsState = tc, &st
	return true
}

// readFailed ends the connection after a failed read, telling the client
// why when it can still listen.
func (c *conn) readFailed(err error) {
	switch {
	case errors.Is(err, errShutdownIdle):
		c.reply(errShuttingDown)
	case isTimeout(err):
		c.log.Info("closing connection", "reason", c.readReason.Message)
		c.reply(c.readReason)
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// lineLimit is the longest command line allowed, given its first bytes.
func (c *conn) lineLimit(prefix []byte) int {
	if prefix == nil {
		return commandLineLimit
	}
	if len(prefix) < 5 {
		return max(c.srv.cfg.MaxLineLength, envelopeLineLimit)
	}
	switch verb := prefix[:5]; {
	case bytes.EqualFold(verb, []byte("AUTH ")):
		// Before TLS too, so that the client learns 538, not 500.
		return c.srv.cfg.MaxLineLength
	case bytes.EqualFold(verb, []byte("MAIL ")), bytes.EqualFold(verb, []byte("RCPT ")):
		return envelopeLineLimit
	}
	return commandLineLimit
}

// command runs one command line.
func (c *conn) command(line string) {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	if c.sess.ident == nil {
		if c.commands++; c.commands > c.srv.cfg.MaxUnauthCommands && verb != "QUIT" {
			c.log.Info("closing connection", "reason", "too many commands before authentication", "commands", c.commands)
			c.reply(errTooManyUnauthCommands)
			c.closing = true
			return
		}
	}
	switch verb {
	case "EHLO", "HELO":
		c.cmdHello(verb, arg)
	case "STARTTLS":
		c.cmdStartTLS(arg)
	case "AUTH":
		c.cmdAuth(arg)
	case "MAIL":
		c.cmdMail(arg)
	case "RCPT":
		c.cmdRcpt(arg)
	case "DATA":
		c.cmdData(arg)
	case "BDAT":
		c.cmdBdat(arg)
	case "RSET":
		c.sess.reset()
		c.replyf(250, smtp.EnhancedCode{2, 0, 0}, "Reset OK")
	case "NOOP":
		c.replyf(250, smtp.EnhancedCode{2, 0, 0}, "OK")
	case "QUIT":
		c.replyf(221, smtp.EnhancedCode{2, 0, 0}, "%s closing connection", c.srv.cfg.Hostname)
		c.closing = true
	case "VRFY":
		// RFC 5321 section 3.5.3: 252 when the server will not verify.
		c.replyf(252, smtp.EnhancedCode{2, 5, 0}, "Cannot verify the user, but will take a message and relay it")
	case "HELP":
		c.replyf(214, smtp.EnhancedCode{2, 0, 0}, "smtpgate message submission: EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, RSET, NOOP, VRFY, QUIT")
	case "EXPN", "TURN", "ETRN", "SEND", "SOML", "SAML":
		c.replyf(502, smtp.EnhancedCode{5, 5, 1}, "%s is not implemented", verb)
	default:
		c.replyf(500, smtp.EnhancedCode{5, 5, 1}, "Command not recognized")
	}
}

func (c *conn) cmdHello(verb, arg string) {
	arg = strings.TrimSpace(arg)
	if arg == "" || strings.ContainsAny(arg, " \t") {
		c.replyf(501, smtp.EnhancedCode{5, 5, 4}, "%s needs the client's domain name or address literal", verb)
		return
	}
	// RFC 5321 section 4.1.4: a new EHLO resets the transaction.
	c.sess.reset()
	c.helo = arg
	if verb == "HELO" {
		c.replyf(250, smtp.EnhancedCode{}, "%s", c.srv.cfg.Hostname)
		return
	}
	ext := []string{
		c.srv.cfg.Hostname + " greets " + sanitizeHelo(arg),
		"PIPELINING",
		"8BITMIME",
		"ENHANCEDSTATUSCODES",
		"SMTPUTF8",
		"SIZE " + strconv.FormatInt(c.srv.cfg.MaxMessageBytes, 10),
	}
	if c.tlsState == nil && c.srv.cfg.TLSConfig != nil {
		ext = append(ext, "STARTTLS")
	}
	if mechs := c.sess.authMechanisms(); len(mechs) > 0 {
		ext = append(ext, "AUTH "+strings.Join(mechs, " "))
	}
	// The EHLO reply carries no enhanced codes (RFC 2034 section 4 leaves
	// them to replies after it); write it by hand.
	for i, l := range ext {
		sep := "-"
		if i == len(ext)-1 {
			sep = " "
		}
		c.out = append(c.out, "250"+sep+l+"\r\n"...)
	}
}

func (c *conn) cmdStartTLS(arg string) {
	switch {
	case c.tlsState != nil:
		c.replyf(503, smtp.EnhancedCode{5, 5, 1}, "TLS is already active")
		return
	case c.srv.cfg.TLSConfig == nil:
		c.replyf(502, smtp.EnhancedCode{5, 5, 1}, "STARTTLS is not offered")
		return
	case arg != "":
		c.replyf(501, smtp.EnhancedCode{5, 5, 4}, "STARTTLS takes no arguments")
		return
	}
	c.replyf(220, smtp.EnhancedCode{2, 0, 0}, "Ready to start TLS")
	if c.flush() != nil {
		c.closing = true
		return
	}
	// RFC 3207 section 4.2: everything from before TLS is forgotten,
	// including what the client pipelined after STARTTLS.
	c.in.discardBuffered()
	c.sess.reset()
	c.sess.ident = nil
	c.helo = ""
	if !c.handshake() {
		c.closing = true
	}
}

func (c *conn) cmdAuth(arg string) {
	switch {
	case c.helo == "":
		c.replyf(503, smtp.EnhancedCode{5, 5, 1}, "Send EHLO first")
		return
	case c.sess.ident != nil:
		c.replyf(503, smtp.EnhancedCode{5, 5, 1}, "Already authenticated")
		return
	case c.inTx.Load():
		c.replyf(503, smtp.EnhancedCode{5, 5, 1}, "AUTH is not allowed during a mail transaction")
		return
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	srv, err := c.sess.auth(mech)
	if err != nil {
		c.replyErr(err)
		return
	}
	var resp []byte
	if hasIR {
		if resp, err = decodeSASL(ir); err != nil {
			c.reply(errBadBase64)
			return
		}
	}
	for {
		challenge, done, err := srv.Next(resp)
		if err != nil {
			c.replyErr(err)
			return
		}
		if done {
			c.replyf(235, smtp.EnhancedCode{2, 7, 0}, "Authentication successful")
			return
		}
		c.out = append(c.out, "334 "...)
		c.out = base64.StdEncoding.AppendEncode(c.out, challenge)
		c.out = append(c.out, '\r', '\n')
		line, err := c.in.readLine(func([]byte) int { return c.srv.cfg.MaxLineLength })
		switch {
		case errors.Is(err, errLineTooLong):
			c.replyf(500, smtp.EnhancedCode{5, 5, 6}, "Line too long (the limit is %d octets)", c.srv.cfg.MaxLineLength)
			return
		case err != nil:
			c.readFailed(err)
			c.closing = true
			return
		case string(line) == "*":
			// RFC 4954 section 4: the client cancelled.
			c.replyf(501, smtp.EnhancedCode{5, 0, 0}, "Authentication cancelled")
			return
		}
		if resp, err = decodeSASL(string(line)); err != nil {
			c.reply(errBadBase64)
			return
		}
	}
}

// decodeSASL decodes a SASL response: base64, with "=" for an empty
// initial response (RFC 4954 section 4).
func decodeSASL(s string) ([]byte, error) {
	if s == "=" {
		return []byte{}, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

// replyErr queues the reply for an error from the session, and closes the
// connection after a 421.
func (c *conn) replyErr(err error) {
	se, ok := errors.AsType[*smtp.SMTPError](err)
	if !ok {
		c.log.Warn("internal error", "err", err)
		se = errLocal
	}
	c.reply(se)
	if se.Code == 421 {
		c.closing = true
	}
}

func (c *conn) cmdMail(arg string) {
	if c.sess.ident == nil {
		c.reply(errAuthRequired)
		return
	}
	if c.inTx.Load() {
		c.reply(errNestedMail)
		return
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		c.replyf(501, smtp.EnhancedCode{5, 5, 4}, "Syntax: MAIL FROM:<address>")
		return
	}
	from, words, err := parsePathArg(rest)
	if err != nil {
		c.replyf(501, smtp.EnhancedCode{5, 1, 7}, "Bad sender address: %s", err)
		return
	}
	params, err := parseMailParams(words)
	switch {
	case errors.Is(err, errParam):
		c.replyf(555, smtp.EnhancedCode{5, 5, 4}, "MAIL parameters not recognized: %s", printable(strings.Join(words, " ")))
		return
	case err != nil:
		c.replyf(501, smtp.EnhancedCode{5, 5, 4}, "%s", err)
		return
	case params.size > c.srv.cfg.MaxMessageBytes:
		c.replyf(552, smtp.EnhancedCode{5, 3, 4}, "Message too big: SIZE=%d, the limit is %d bytes", params.size, c.srv.cfg.MaxMessageBytes)
		return
	case !params.smtputf8 && !isASCII(from):
		c.reply(errNeedSMTPUTF8)
		return
	}
	if err := c.sess.mail(from, params); err != nil {
		c.replyErr(err)
		return
	}
	c.replyf(250, smtp.EnhancedCode{2, 1, 0}, "Sender <%s> OK", printable(from))
}

func (c *conn) cmdRcpt(arg string) {
	if c.sess.ident == nil {
		c.reply(errAuthRequired)
		return
	}
	if !c.inTx.Load() {
		c.replyf(503, smtp.EnhancedCode{5, 5, 1}, "Send MAIL first")
		return
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		c.replyf(501, smtp.EnhancedCode{5, 5, 4}, "Syntax: RCPT TO:<address>")
		return
	}
	to, words, err := parsePathArg(rest)
	switch {
	case err == nil && to == "":
		err = errors.New("the recipient cannot be empty")
		fallthrough
	case err != nil:
		c.replyf(501, smtp.EnhancedCode{5, 1, 3}, "Bad recipient address: %s", err)
		return
	case len(words) > 0:
		c.replyf(555, smtp.EnhancedCode{5, 5, 4}, "RCPT parameters not recognized: %s", printable(strings.Join(words, " ")))
		return
	case !c.sess.smtputf8 && !isASCII(to):
		c.reply(errNeedSMTPUTF8)
		return
	case len(c.sess.rcpts) >= c.srv.cfg.MaxRecipients:
		// RFC 5321 section 4.5.3.1.10: 452, and the client sends the
		// rest in another transaction.
		c.replyf(452, smtp.EnhancedCode{4, 5, 3}, "Too many recipients (the limit is %d per message)", c.srv.cfg.MaxRecipients)
		return
	}
	if err := c.sess.rcpt(to); err != nil {
		c.replyErr(err)
		return
	}
	c.replyf(250, smtp.EnhancedCode{2, 1, 5}, "Recipient <%s> OK", printable(to))
}

func (c *conn) cmdData(arg string) {
	switch {
	case c.sess.ident == nil:
		c.reply(errAuthRequired)
		return
	case !c.inTx.Load():
		c.replyf(503, smtp.EnhancedCode{5, 5, 1}, "Send MAIL first")
		return
	case len(c.sess.rcpts) == 0:
		c.replyf(503, smtp.EnhancedCode{5, 5, 1}, "No valid recipients")
		return
	case arg != "":
		c.replyf(501, smtp.EnhancedCode{5, 5, 4}, "DATA takes no arguments")
		return
	}
	c.replyf(354, smtp.EnhancedCode{}, "Start mail input; end with <CRLF>.<CRLF>")
	c.in.borrowLarge()
	dr := newDataReader(&c.in, c.srv.cfg.MaxMessageBytes)
	reply := c.sess.data(dr)
	switch {
	case errors.Is(dr.err, errMessageTooLarge):
		if err := dr.drain(); err != nil {
			c.dataFailed(err)
			return
		}
		c.replyf(552, smtp.EnhancedCode{5, 3, 4}, "Message too big: the limit is %d bytes; nothing was sent", c.srv.cfg.MaxMessageBytes)
	case dr.err != nil && dr.err != io.EOF:
		c.dataFailed(dr.err)
		return
	default:
		if err := dr.drain(); err != nil {
			c.dataFailed(err)
			return
		}
		c.replyErr(reply)
	}
	c.in.shrink()
}

// dataFailed ends a connection whose client stopped sending in the middle
// of a message: nothing was relayed, and a client still listening gets a
// temporary code.
func (c *conn) dataFailed(err error) {
	c.closing = true
	c.log.Info("message not received", "err", err)
	switch {
	case errors.Is(err, errShutdownIdle):
		c.reply(errShuttingDown)
	case isTimeout(err):
		c.reply(c.readReason)
	default:
		c.reply(errDataIncomplete)
	}
}

// cmdBdat refuses BDAT: CHUNKING (RFC 3030) is not offered, and MUAs do
// not need it. The chunk the client sent with the command is skipped, so
// it is never read as commands; a chunk too large to skip ends the
// connection.
func (c *conn) cmdBdat(arg string) {
	size, err := strconv.ParseInt(strings.Fields(arg + " x")[0], 10, 64)
	if err != nil || size < 0 || size > c.srv.cfg.MaxMessageBytes {
		c.replyf(421, smtp.EnhancedCode{4, 5, 1}, "BDAT (CHUNKING) is not offered; use DATA. Closing connection")
		c.closing = true
		return
	}
	for size > 0 {
		in := c.in.buffered()
		if len(in) == 0 {
			if err := c.in.fill(); err != nil {
				c.readFailed(err)
				c.closing = true
				return
			}
			continue
		}
		n := int(min(int64(len(in)), size))
		c.in.consume(n)
		size -= int64(n)
	}
	c.replyf(502, smtp.EnhancedCode{5, 5, 1}, "BDAT (CHUNKING) is not offered; use DATA")
}

// cutPrefixFold cuts a case-insensitive ASCII prefix.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// bufPool lends DATA buffers.
type bufPool struct{ p *sync.Pool }

func (b bufPool) get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b bufPool) put(x []byte) { b.p.Put(&x) }
