package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// A Server is the SMTP submission gateway. Serve and ServeTLS may be called
// for any number of listeners; Shutdown drains them all.
type Server struct {
	cfg   Config
	smtp  *smtp.Server
	relay *relay
	log   *slog.Logger

	bufs    sync.Pool // *dataBuf: the message buffers, reused
	slow    *slowdown // nil when disabled
	seq     atomic.Uint64
	closing atomic.Bool
	mu      sync.Mutex
	conns   map[*trackedConn]struct{}
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
		cfg:   cfg,
		log:   cfg.Logger,
		relay: newRelay(cfg.Upstream, cfg.Hostname, cfg.Logger),
		conns: make(map[*trackedConn]struct{}),
	}
	s.bufs.New = newDataBuf
	if cfg.AuthFailureDelay > 0 {
		s.slow = newSlowdown(cfg.AuthFailureDelay)
	}
	ss := smtp.NewServer(smtp.BackendFunc(s.newSession))
	ss.Domain = cfg.Hostname
	ss.TLSConfig = cfg.TLSConfig
	// The session decides whether AUTH is offered, so that AUTH before TLS
	// is answered 538 5.7.11 (RFC 4954 section 6) where go-smtp would say
	// 523.
	ss.AllowInsecureAuth = true
	ss.MaxMessageBytes = cfg.MaxMessageBytes
	ss.MaxRecipients = cfg.MaxRecipients
	ss.MaxLineLength = cfg.MaxLineLength
	ss.ReadTimeout = cfg.ReadTimeout
	ss.WriteTimeout = cfg.WriteTimeout
	ss.ErrorLog = slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)
	s.smtp = ss
	return s, nil
}

// Serve accepts submission connections on l, offering STARTTLS (RFC 6409,
// port 587). It returns nil after Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	return s.smtp.Serve(&listener{Listener: l, srv: s})
}

// ServeTLS accepts connections on l that start with a TLS handshake
// (RFC 8314 implicit TLS, port 465). It returns nil after Shutdown or Close.
func (s *Server) ServeTLS(l net.Listener) error {
	if s.cfg.TLSConfig == nil {
		return errors.New("gateway: ServeTLS needs a TLS certificate")
	}
	return s.smtp.Serve(&listener{Listener: l, srv: s, tls: s.cfg.TLSConfig})
}

// Shutdown stops accepting connections, closes idle ones with 421, lets
// transactions under way finish, and returns when every connection is gone
// or ctx is done; then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	var idle []*trackedConn
	s.mu.Lock()
	for tc := range s.conns {
		if !tc.busy.Load() {
			idle = append(idle, tc)
		}
	}
	s.mu.Unlock()
	for _, tc := range idle {
		tc.goodbye()
	}
	err := s.smtp.Shutdown(ctx)
	if err != nil {
		s.smtp.Close()
	}
	s.relay.close()
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close closes every listener and connection at once.
func (s *Server) Close() error {
	s.closing.Store(true)
	err := s.smtp.Close()
	s.relay.close()
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

// A listener tracks the connections it accepts, and starts TLS on them for
// implicit TLS.
type listener struct {
	net.Listener
	srv *Server
	tls *tls.Config
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, srv: l.srv, id: strconv.FormatUint(l.srv.seq.Add(1), 10)}
	var top net.Conn = tc
	if l.tls != nil {
		top = tls.Server(tc, l.tls)
	}
	tc.top.Store(&top)
	l.srv.mu.Lock()
	l.srv.conns[tc] = struct{}{}
	l.srv.mu.Unlock()
	return top, nil
}

// A trackedConn is one client connection, under TLS if any. It holds what
// lasts for the whole connection, across the new session go-smtp starts
// after STARTTLS.
type trackedConn struct {
	net.Conn
	srv *Server
	id  string
	top atomic.Pointer[net.Conn] // the connection replies are written to: TLS once started

	authFailures    int         // only touched by the connection's goroutine
	busy            atomic.Bool // a mail transaction is under way
	closeAfterWrite atomic.Bool // close once the next reply is written
	closeOnce       sync.Once
}

func (tc *trackedConn) Write(b []byte) (int, error) {
	n, err := tc.Conn.Write(b)
	if tc.closeAfterWrite.Load() {
		tc.Close()
	}
	return n, err
}

func (tc *trackedConn) Close() error {
	var err error
	tc.closeOnce.Do(func() {
		err = tc.Conn.Close()
		tc.srv.mu.Lock()
		delete(tc.srv.conns, tc)
		tc.srv.mu.Unlock()
	})
	return err
}

// goodbye tells an idle client the server is going away (RFC 5321
// section 3.8) and closes the connection.
func (tc *trackedConn) goodbye() {
	top := *tc.top.Load()
	top.SetWriteDeadline(time.Now().Add(time.Second))
	top.Write([]byte("421 4.3.2 Service shutting down, try again later\r\n"))
	tc.Close()
}

// connOf returns the trackedConn under c, which may be a TLS connection.
func connOf(c net.Conn) *trackedConn {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	tc, _ := c.(*trackedConn)
	return tc
}
