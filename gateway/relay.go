package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// A relay hands out connections to the upstream MTA. Idle connections are
// kept for reuse; a pooled connection the upstream has meanwhile closed is
// replaced before the client sees any reply.
type relay struct {
	cfg      UpstreamConfig
	hostname string
	log      *slog.Logger
	slots    chan struct{} // one per connection open, bounded by MaxConns

	mu     sync.Mutex
	idle   []*upstreamConn // most recently used last
	closed bool
}

// An upstreamConn is one connection to the upstream MTA.
type upstreamConn struct {
	c         *smtp.Client
	conn      net.Conn
	idleSince time.Time
	reused    bool // taken from the pool rather than dialled for this transaction
	dirty     bool // a transaction was started and not completed: RSET before reuse
}

func newRelay(cfg UpstreamConfig, hostname string, log *slog.Logger) *relay {
	return &relay{cfg: cfg, hostname: hostname, log: log, slots: make(chan struct{}, cfg.MaxConns)}
}

// mail starts a transaction on an upstream connection. Errors are
// *smtp.SMTPError: the upstream's own reply to MAIL, or errUpstreamDown.
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
	var fwd *smtp.MailOptions
	if opts != nil {
		fwd = &smtp.MailOptions{Body: opts.Body, Size: opts.Size, UTF8: opts.UTF8, RequireTLS: opts.RequireTLS}
	}
	for attempt := 0; ; attempt++ {
		uc, err := r.get(ctx)
		if err != nil {
			<-r.slots
			r.log.Warn("upstream unreachable", "upstream", r.cfg.Addr, "err", err)
			return nil, errUpstreamDown
		}
		uc.dirty = true
		err = uc.c.Mail(from, fwd)
		if err == nil {
			return uc, nil
		}
		if se, ok := errors.AsType[*smtp.SMTPError](err); ok {
			r.release(uc, false)
			return nil, se
		}
		uc.c.Close()
		if uc.reused && attempt == 0 {
			// The upstream closed the pooled connection while it was
			// idle: dial a fresh one.
			r.log.Debug("pooled upstream connection dead, redialling", "err", err)
			continue
		}
		<-r.slots
		r.log.Warn("upstream MAIL failed", "upstream", r.cfg.Addr, "err", err)
		return nil, errUpstreamDown
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

func (r *relay) dial(ctx context.Context) (*upstreamConn, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	defer cancel()
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", r.cfg.Addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	tlsConfig := r.tlsConfig()
	var c *smtp.Client
	switch r.cfg.TLS {
	case UpstreamTLSImplicit:
		tc := tls.Client(conn, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
		c = smtp.NewClient(conn)
	case UpstreamTLSStartTLS:
		c, err = smtp.NewClientStartTLS(conn, tlsConfig)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("starttls: %w", err)
		}
	default:
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = r.cfg.CommandTimeout
	c.SubmissionTimeout = r.cfg.CommandTimeout
	if err := c.Hello(r.hostname); err != nil {
		c.Close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	if r.cfg.Username != "" {
		if err := c.Auth(sasl.NewPlainClient("", r.cfg.Username, r.cfg.Password)); err != nil {
			c.Close()
			return nil, fmt.Errorf("upstream auth: %w", err)
		}
	}
	conn.SetDeadline(time.Time{})
	return &upstreamConn{c: c, conn: conn}, nil
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

// release ends the use of a connection. A usable one goes back to the pool
// (after RSET if its transaction did not complete); a broken one is closed.
func (r *relay) release(uc *upstreamConn, broken bool) {
	defer func() { <-r.slots }()
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
