// Package loadgen drives SMTP submission sessions against a server, for
// smtpgate's benchmarks and the smtpload command: many at once, each a
// whole session (connect, EHLO, STARTTLS, AUTH OAUTHBEARER, MAIL, RCPT,
// DATA, QUIT), or sessions that authenticate and then sit idle.
//
// It only talks to loopback addresses unless told otherwise: a load run
// is never pointed at someone else's server by accident.
package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Options configure a run.
type Options struct {
	// Addr is the server's host:port. It must be a loopback address
	// unless AllowRemote is set.
	Addr        string
	AllowRemote bool
	// TLS, if set, upgrades each connection with STARTTLS.
	TLS *tls.Config
	// Tokens are the bearer tokens for AUTH OAUTHBEARER, used in turn: one
	// token means every session presents the same (cached) token; as many
	// as sessions means a fresh token each. None means no AUTH.
	Tokens []string
	// From and To make the envelope; Message is sent as it is.
	From, To string
	Message  []byte
	// Concurrency is how many sessions run at once; Sessions how many run
	// in all. Idle, if set, opens Concurrency sessions that authenticate
	// and wait instead.
	Concurrency int
	Sessions    int
	Idle        bool
	// Timeout bounds each session. Zero means 30s.
	Timeout time.Duration
}

// A Result is what a run measured.
type Result struct {
	Sessions int           // sessions completed (or opened, for Idle)
	Errors   int           // sessions that failed
	FirstErr error         // the first failure, if any
	Elapsed  time.Duration // wall time of the run
	P50, P99 time.Duration // session latency percentiles
}

// SessionsPerSecond is the completed sessions over the wall time.
func (r Result) SessionsPerSecond() float64 {
	return float64(r.Sessions) / r.Elapsed.Seconds()
}

func (r Result) String() string {
	return fmt.Sprintf("%d sessions, %d errors in %v: %.0f sessions/s, p50 %v, p99 %v",
		r.Sessions, r.Errors, r.Elapsed.Round(time.Millisecond), r.SessionsPerSecond(), r.P50, r.P99)
}

func (o *Options) check() error {
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	if o.From == "" {
		o.From = "alice@example.com"
	}
	if o.To == "" {
		o.To = "bob@example.org"
	}
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return fmt.Errorf("loadgen: address %q: %w", o.Addr, err)
	}
	if ip, err := netip.ParseAddr(host); !o.AllowRemote && (err != nil || !ip.IsLoopback()) && host != "localhost" {
		return fmt.Errorf("loadgen: %s is not a loopback address; load runs stay on this machine", host)
	}
	if !o.Idle && o.Sessions <= 0 {
		return errors.New("loadgen: Sessions must be positive")
	}
	return nil
}

// Run drives the sessions and reports. For Idle runs it returns once every
// session is open, handing back the clients to close with Close.
func Run(ctx context.Context, o Options) (Result, error) {
	if err := o.check(); err != nil {
		return Result{}, err
	}
	var (
		next atomic.Int64
		mu   sync.Mutex
		res  Result
		lat  []time.Duration
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range o.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= o.Sessions {
					return
				}
				t0 := time.Now()
				err := o.session(ctx, i)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					res.Errors++
					if res.FirstErr == nil {
						res.FirstErr = err
					}
				} else {
					res.Sessions++
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.P50, res.P99 = percentile(lat, 50), percentile(lat, 99)
	return res, ctx.Err()
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[(len(d)-1)*p/100]
}

// session runs the i-th whole session.
func (o *Options) session(ctx context.Context, i int) error {
	c, err := o.dial(ctx, i)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SendMail(o.From, []string{o.To}, bytes.NewReader(o.Message)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := c.Quit(); err != nil {
		return fmt.Errorf("QUIT: %w", err)
	}
	return nil
}

// dial connects and gets as far as a successful AUTH.
func (o *Options) dial(ctx context.Context, i int) (*smtp.Client, error) {
	d := net.Dialer{Timeout: o.Timeout}
	conn, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(o.Timeout))
	var c *smtp.Client
	if o.TLS != nil {
		if c, err = smtp.NewClientStartTLS(conn, o.TLS); err != nil {
			conn.Close()
			return nil, fmt.Errorf("STARTTLS: %w", err)
		}
	} else {
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = o.Timeout
	c.SubmissionTimeout = o.Timeout
	if err := c.Hello("loadgen.test"); err != nil {
		c.Close()
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if len(o.Tokens) > 0 {
		a := sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: o.From, Token: o.Tokens[i%len(o.Tokens)]})
		if err := c.Auth(a); err != nil {
			c.Close()
			return nil, fmt.Errorf("AUTH: %w", err)
		}
	}
	if o.Idle {
		conn.SetDeadline(time.Time{})
	}
	return c, nil
}

// OpenIdle opens Concurrency sessions that authenticate and then wait, and
// returns them; close them with CloseAll.
func OpenIdle(ctx context.Context, o Options) ([]*smtp.Client, Result, error) {
	o.Idle = true
	if err := o.check(); err != nil {
		return nil, Result{}, err
	}
	clients := make([]*smtp.Client, o.Concurrency)
	var (
		next atomic.Int64
		mu   sync.Mutex
		res  Result
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range min(o.Concurrency, 64) { // dial 64 at a time
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(clients) {
					return
				}
				c, err := o.dial(ctx, i)
				mu.Lock()
				if err != nil {
					res.Errors++
					if res.FirstErr == nil {
						res.FirstErr = err
					}
				} else {
					clients[i] = c
					res.Sessions++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return clients, res, ctx.Err()
}

// CloseAll closes idle sessions.
func CloseAll(clients []*smtp.Client) {
	for _, c := range clients {
		if c != nil {
			c.Close()
		}
	}
}

// Message returns a message from from to to of at least size bytes, in
// 78-character lines as base64 attachments have.
func Message(from, to string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: load\r\nMessage-ID: <load@example.com>\r\n\r\n", from, to)
	const line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}
