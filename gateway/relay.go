package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// A relay hands out connections to the upstream MTA. Idle connections are
// kept for reuse; a pooled connection the upstream has meanwhile closed (or
// that answers 421) is replaced before the client sees any reply.
//
// The envelope goes through go-smtp's client. The message itself is
// written by the relay, dot-stuffed in bulk, straight to the connection:
// go-smtp's DATA writer handles one byte per call.
type relay struct {
	cfg      UpstreamConfig
	hostname string
	log      *slog.Logger
	slots    chan struct{} // one per connection open, bounded by MaxConns
	writers  sync.Pool     // *[]byte of dataBufSize: message data on its way upstream

	mu     sync.Mutex
	idle   []*upstreamConn // most recently used last
	closed bool
}

// An upstreamConn is one connection to the upstream MTA.
type upstreamConn struct {
	c         *smtp.Client
	conn      *greetedConn // what c reads and writes: TLS, if any, included
	idleSince time.Time
	reused    bool // taken from the pool rather than dialled for this transaction
	dirty     bool // a transaction was started and not completed: RSET before reuse
	stop      func() bool
}

func newRelay(cfg UpstreamConfig, hostname string, log *slog.Logger) *relay {
	r := &relay{cfg: cfg, hostname: hostname, log: log, slots: make(chan struct{}, cfg.MaxConns)}
	r.writers.New = func() any { b := make([]byte, 0, dataBufSize); return &b }
	return r
}

// mail starts a transaction on an upstream connection. Errors are
// *smtp.SMTPError: the upstream's own refusal of MAIL, or one of ours.
// While the transaction lasts, cancelling ctx closes the connection, so a
// session stuck waiting on the upstream never holds up a shutdown.
func (r *relay) mail(ctx context.Context, from string, opts *smtp.MailOptions) (*upstreamConn, error) {
	// All max_conns connections busy: wait as long as a dial may take,
	// then let the client try again later.
	wait := time.NewTimer(r.cfg.DialTimeout)
	defer wait.Stop()
	select {
	case r.slots <- struct{}{}:
	case <-wait.C:
		r.log.Warn("upstream connections all busy", "upstream", r.cfg.Addr, "max_conns", r.cfg.MaxConns)
		return nil, errUpstreamDown
	case <-ctx.Done():
		return nil, errUpstreamDown
	}
	for attempt := 0; ; attempt++ {
		uc, err := r.get(ctx)
		if err != nil {
			<-r.slots
			r.log.Warn("upstream unreachable", "upstream", r.cfg.Addr, "err", err)
			return nil, errUpstreamDown
		}
		uc.dirty = true
		uc.stop = context.AfterFunc(ctx, func() { uc.conn.Close() })
		err = uc.c.Mail(from, opts)
		if err == nil {
			return uc, nil
		}
		se, isReply := errors.AsType[*smtp.SMTPError](err)
		if isReply && se.Code != 421 && se.Code >= 400 && se.Code < 600 {
			r.release(uc, false)
			return nil, se
		}
		r.discard(uc)
		if uc.reused && attempt == 0 && (!isReply || se.Code == 421) {
			// The upstream closed the pooled connection while it was
			// idle, or is about to: dial a fresh one, once.
			r.log.Debug("pooled upstream connection dead, redialling", "err", err)
			continue
		}
		<-r.slots
		r.log.Warn("upstream MAIL failed", "upstream", r.cfg.Addr, "err", err)
		if isReply {
			return nil, errUpstreamOutOfStep
		}
		return nil, errUpstreamDown
	}
}

// replyOf sorts an upstream error: a 4xx or 5xx reply (but 421, which
// announces a close) is the client's answer, and the connection stays in
// step; any other reply means the conversation is out of step; anything
// else is a lost connection.
func replyOf(err error) (reply error, broken bool) {
	se, ok := errors.AsType[*smtp.SMTPError](err)
	switch {
	case !ok:
		return errUpstreamLost, true
	case se.Code >= 400 && se.Code < 600 && se.Code != 421:
		return se, false
	default:
		return errUpstreamOutOfStep, true
	}
}

// get returns an idle connection or dials one.
func (r *relay) get(ctx context.Context) (*upstreamConn, error) {
	now := time.Now()
	r.mu.Lock()
	for len(r.idle) > 0 {
		uc := r.idle[len(r.idle)-1]
		r.idle = r.idle[:len(r.idle)-1]
		if now.Sub(uc.idleSince) < r.cfg.IdleTimeout {
			r.mu.Unlock()
			uc.reused = true
			return uc, nil
		}
		go uc.quit()
	}
	r.mu.Unlock()
	return r.dial(ctx)
}

// dial connects and gets as far as a MAIL command can go. DialTimeout
// bounds all of it: connect, TLS, greeting, EHLO, STARTTLS and AUTH.
func (r *relay) dial(ctx context.Context) (*upstreamConn, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	d := net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", r.cfg.Addr)
	if err != nil {
		return nil, err
	}
	// Cancelling ctx (the dial timeout or the session's end) interrupts
	// whatever step is under way.
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Now()) })
	defer stop()
	uc, err := r.handshake(ctx, raw, deadline)
	if err != nil {
		raw.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (after %s)", err, r.cfg.DialTimeout)
		}
		return nil, err
	}
	if !stop() {
		uc.c.Close()
		return nil, ctx.Err()
	}
	raw.SetDeadline(time.Time{})
	uc.c.CommandTimeout = r.cfg.CommandTimeout
	uc.c.SubmissionTimeout = r.cfg.CommandTimeout
	return uc, nil
}

func (r *relay) handshake(ctx context.Context, raw net.Conn, deadline time.Time) (*upstreamConn, error) {
	raw.SetDeadline(deadline)
	conn := raw
	tlsConfig := r.tlsConfig()
	if r.cfg.TLS == UpstreamTLSImplicit {
		tc := tls.Client(raw, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
	}
	// The greeting, and STARTTLS, by hand: go-smtp's client sets its own
	// deadline of CommandTimeout for each of them and keeps the TLS
	// connection to itself.
	tp := textproto.NewReader(bufio.NewReaderSize(conn, 1024))
	greeting, err := readUpstreamReply(tp, 220, "greeting")
	if err != nil {
		return nil, err
	}
	if r.cfg.TLS == UpstreamTLSStartTLS {
		if _, err := fmt.Fprintf(conn, "EHLO %s\r\n", r.hostname); err != nil {
			return nil, err
		}
		if _, err := readUpstreamReply(tp, 250, "EHLO"); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(conn, "STARTTLS\r\n"); err != nil {
			return nil, err
		}
		if _, err := readUpstreamReply(tp, 220, "STARTTLS"); err != nil {
			return nil, err
		}
		tc := tls.Client(raw, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("starttls: tls handshake: %w", err)
		}
		conn = tc
		greeting = "ready after STARTTLS"
	}
	// go-smtp reads a greeting before its EHLO: give it the one we read.
	gc := &greetedConn{Conn: conn, greeting: "220 " + firstLine(greeting) + "\r\n"}
	c := smtp.NewClient(gc)
	c.CommandTimeout = max(time.Until(deadline), time.Millisecond)
	if err := c.Hello(r.hostname); err != nil {
		return nil, fmt.Errorf("hello: %w", err)
	}
	if r.cfg.Username != "" {
		c.CommandTimeout = max(time.Until(deadline), time.Millisecond)
		if err := c.Auth(sasl.NewPlainClient("", r.cfg.Username, r.cfg.Password)); err != nil {
			return nil, fmt.Errorf("upstream auth: %w", err)
		}
	}
	return &upstreamConn{c: c, conn: gc}, nil
}

func readUpstreamReply(tp *textproto.Reader, want int, step string) (string, error) {
	_, msg, err := tp.ReadResponse(want)
	if err != nil {
		return "", fmt.Errorf("%s: %w", step, err)
	}
	return msg, nil
}

func firstLine(s string) string {
	if i := bytes.IndexAny([]byte(s), "\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}

// A greetedConn is the upstream connection as go-smtp's client sees it.
// It replays the upstream's greeting, which the client reads before its
// first command, and it can hold back the end of a message (cork) to send
// it in one write with the final dot go-smtp writes.
type greetedConn struct {
	net.Conn
	greeting string
	cork     []byte
}

func (g *greetedConn) Write(p []byte) (int, error) {
	if len(g.cork) == 0 {
		return g.Conn.Write(p)
	}
	b := append(g.cork, p...)
	g.cork = nil
	if _, err := g.Conn.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (g *greetedConn) Read(p []byte) (int, error) {
	if g.greeting != "" {
		n := copy(p, g.greeting)
		g.greeting = g.greeting[n:]
		return n, nil
	}
	return g.Conn.Read(p)
}

func (r *relay) tlsConfig() *tls.Config {
	if r.cfg.TLSConfig != nil {
		return r.cfg.TLSConfig
	}
	host, _, err := net.SplitHostPort(r.cfg.Addr)
	if err != nil {
		host = r.cfg.Addr
	}
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
}

// data sends DATA and returns a writer for the message, which the caller
// ends with finish. An error is go-smtp's: sort it with replyOf.
func (r *relay) data(uc *upstreamConn) (*messageWriter, error) {
	dc, err := uc.c.Data()
	if err != nil {
		return nil, err
	}
	buf := r.writers.Get().(*[]byte)
	return &messageWriter{r: r, uc: uc, dc: dc, buf: buf, bol: true}, nil
}

// A messageWriter dot-stuffs a message whose lines all end in CRLF (what
// the dataReader produces) onto the upstream connection, line by line
// rather than byte by byte, in writes of up to dataBufSize. It holds back
// a final CRLF, since go-smtp's closing "\r\n.\r\n" supplies it, and it
// leaves its last bytes for that same write.
type messageWriter struct {
	r       *relay
	uc      *upstreamConn
	dc      *smtp.DataCommand
	buf     *[]byte
	bol     bool // at the start of a line
	pending bool // a CRLF held back
	err     error
}

func (m *messageWriter) Write(p []byte) (int, error) {
	total := len(p)
	if m.err != nil || total == 0 {
		return 0, m.err
	}
	if m.pending {
		m.put([]byte("\r\n"))
		m.pending = false
	}
	if bytes.HasSuffix(p, []byte("\r\n")) {
		p = p[:len(p)-2]
		m.pending = true
	}
	for len(p) > 0 && m.err == nil {
		if m.bol && p[0] == '.' {
			m.put([]byte{'.'})
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			m.put(p)
			m.bol = false
			break
		}
		m.put(p[:i+1])
		p = p[i+1:]
		m.bol = true
	}
	if m.pending {
		m.bol = true
	}
	if m.err != nil {
		return 0, m.err
	}
	return total, nil
}

// put appends to the buffer, writing it out when full.
func (m *messageWriter) put(p []byte) {
	b := *m.buf
	for len(p) > 0 && m.err == nil {
		n := min(len(p), cap(b)-len(b))
		b = append(b, p[:n]...)
		p = p[n:]
		if len(b) == cap(b) {
			m.uc.conn.SetWriteDeadline(time.Now().Add(m.r.cfg.CommandTimeout))
			_, m.err = m.uc.conn.Conn.Write(b)
			b = b[:0]
		}
	}
	*m.buf = b
}

// finish ends the message and returns the upstream's reply text, or the
// error to give the client, with broken set when the connection is no
// longer usable. Without the upstream's reply the message may or may not
// have been accepted: 451 risks a duplicate, 250 risks a loss.
func (m *messageWriter) finish() (text string, reply error, broken bool) {
	defer m.free()
	if m.err != nil {
		return "", errUpstreamLost, true
	}
	m.uc.conn.cork = *m.buf // written with go-smtp's final dot
	resp, err := m.dc.CloseWithResponse()
	m.uc.conn.cork = nil
	if err != nil {
		reply, broken := replyOf(err)
		return "", reply, broken
	}
	return resp.StatusText, nil, false
}

// free gives the buffer back; the connection is abandoned by the caller
// unless finish succeeded.
func (m *messageWriter) free() {
	if m.buf != nil {
		*m.buf = (*m.buf)[:0]
		m.r.writers.Put(m.buf)
		m.buf = nil
	}
}

// release ends the use of a connection. A usable one goes back to the pool
// (after RSET if its transaction did not complete); a broken one is closed.
func (r *relay) release(uc *upstreamConn, broken bool) {
	defer func() { <-r.slots }()
	if uc.stop != nil && !uc.stop() {
		broken = true // the session ended and closed it
	}
	uc.stop = nil
	if !broken && uc.dirty {
		broken = uc.c.Reset() != nil
	}
	uc.dirty = false
	r.mu.Lock()
	if broken || r.closed || len(r.idle) >= r.cfg.MaxIdle {
		r.mu.Unlock()
		if broken {
			uc.c.Close()
		} else {
			go uc.quit() // a surplus connection: say goodbye off the session's path
		}
		return
	}
	uc.idleSince = time.Now()
	r.idle = append(r.idle, uc)
	r.mu.Unlock()
}

// discard closes a connection that failed before it held a slot's
// transaction.
func (r *relay) discard(uc *upstreamConn) {
	if uc.stop != nil {
		uc.stop()
		uc.stop = nil
	}
	uc.c.Close()
}

// close closes the idle connections, politely, and keeps the pool empty.
func (r *relay) close() {
	r.mu.Lock()
	idle := r.idle
	r.idle, r.closed = nil, true
	r.mu.Unlock()
	for _, uc := range idle {
		uc.quit()
	}
}

// quit ends a connection politely, and closes it regardless.
func (uc *upstreamConn) quit() {
	uc.c.CommandTimeout = 5 * time.Second
	if err := uc.c.Quit(); err != nil {
		uc.c.Close()
	}
}
