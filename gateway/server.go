package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// A Server is the SMTP submission gateway: its own SMTP server engine (one
// goroutine and one state machine per connection) in front of the relay.
// Serve and ServeTLS may be called for any number of listeners; Shutdown
// drains them all.
type Server struct {
	cfg   Config
	relay *relay
	log   *slog.Logger

	dataBufs sync.Pool // *[]byte of dataBufSize, lent to connections for DATA
	bufs     sync.Pool // *dataBuf: the relay's message buffers
	slow     *slowdown // nil when disabled
	seq      atomic.Uint64
	closing  atomic.Bool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}   // every connection, refused ones too, until closed
	accepted  int                  // conns not refused: what MaxConns bounds
	perClient map[netip.Prefix]int // open connections per client address (IPv6: per /64)
	perIdent  map[string]int       // transactions under way per identity
	drained   chan struct{}        // closed when closing and no connection is left
	running   sync.WaitGroup       // connection goroutines
}

// New returns a Server for cfg, or every problem with cfg.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.TLSConfig != nil {
		cfg.TLSConfig = cfg.TLSConfig.Clone()
		if cfg.TLSConfig.MinVersion < tls.VersionTLS12 {
			cfg.TLSConfig.MinVersion = tls.VersionTLS12
		}
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		relay:     newRelay(cfg.Upstream, cfg.Hostname, cfg.Logger),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		perClient: make(map[netip.Prefix]int),
		perIdent:  make(map[string]int),
		drained:   make(chan struct{}),
	}
	s.dataBufs.New = func() any { b := make([]byte, dataBufSize); return &b }
	s.bufs.New = newDataBuf
	if cfg.AuthFailureDelay > 0 {
		s.slow = newSlowdown(cfg.AuthFailureDelay)
	}
	return s, nil
}

// Serve accepts submission connections on l, offering STARTTLS (RFC 6409,
// port 587). It returns nil after Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	return s.serve(l, false)
}

// ServeTLS accepts connections on l that start with a TLS handshake
// (RFC 8314 implicit TLS, port 465). It returns nil after Shutdown or Close.
func (s *Server) ServeTLS(l net.Listener) error {
	if s.cfg.TLSConfig == nil {
		return errors.New("gateway: ServeTLS needs a TLS certificate")
	}
	return s.serve(l, true)
}

func (s *Server) serve(l net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				// Out of file descriptors and the like: wait, as
				// net/http does, rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if c := s.newConn(nc, implicitTLS); c != nil {
			go c.serve()
		}
	}
}

// clientPrefix is what connections are counted by: the address, or its /64
// for IPv6, where one host may hold a whole /64.
func clientPrefix(addr net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Prefix{}
	}
	ip := ap.Addr().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

func (s *Server) newConn(nc net.Conn, implicitTLS bool) *conn {
	c := &conn{
		srv:         s,
		raw:         nc,
		nc:          nc,
		implicitTLS: implicitTLS,
		id:          strconv.FormatUint(s.seq.Add(1), 10),
		client:      clientPrefix(nc.RemoteAddr()),
		started:     time.Now(),
	}
	c.start()
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		c.close()
		return nil
	}
	s.running.Add(1) // under mu, so never after Close's Wait began
	switch {
	case s.accepted >= s.cfg.MaxConns:
		c.refused = errTooManyConns
	case s.perClient[c.client] >= s.cfg.MaxConnsPerClient:
		c.refused = errTooManyClientConns
	}
	s.conns[c] = struct{}{}
	if c.refused == nil {
		s.accepted++
		s.perClient[c.client]++
	}
	s.mu.Unlock()
	return c
}

// forget removes a closed connection.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	if c.refused == nil {
		s.accepted--
		if s.perClient[c.client]--; s.perClient[c.client] <= 0 {
			delete(s.perClient, c.client)
		}
	}
	if len(s.conns) == 0 && s.closing.Load() {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
}

// beginTransaction counts a transaction for an identity, refusing one
// beyond MaxTransactionsPerIdentity.
func (s *Server) beginTransaction(subject string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIdent[subject] >= s.cfg.MaxTransactionsPerIdentity {
		return false
	}
	s.perIdent[subject]++
	return true
}

func (s *Server) endTransaction(subject string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIdent[subject]--; s.perIdent[subject] <= 0 {
		delete(s.perIdent, subject)
	}
}

// stopAccepting marks the server closing and closes its listeners.
func (s *Server) stopAccepting() {
	s.mu.Lock()
	s.closing.Store(true) // under mu: newConn adds no connection after this
	for l := range s.listeners {
		l.Close()
	}
	if len(s.conns) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
	s.mu.Unlock()
}

func (s *Server) snapshot() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	return cs
}

// Shutdown stops accepting connections, tells clients waiting between
// transactions "421 4.3.2" and closes them, lets transactions under way
// finish, and returns when every connection is gone. When ctx ends first,
// it closes what is left and returns ctx's error. A client in the middle
// of a TLS handshake is not waited for.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopAccepting()
	for _, c := range s.snapshot() {
		c.interrupt()
	}
	var err error
	select {
	case <-s.drained:
	case <-ctx.Done():
		err = ctx.Err()
		for _, c := range s.snapshot() {
			c.close()
		}
		s.running.Wait() // closed connections end at once: their sessions are cancelled
	}
	s.relay.close()
	return err
}

// Close closes every listener and connection at once, and returns when
// their goroutines have ended.
func (s *Server) Close() error {
	s.stopAccepting()
	for _, c := range s.snapshot() {
		c.close()
	}
	s.running.Wait()
	s.relay.close()
	return nil
}
