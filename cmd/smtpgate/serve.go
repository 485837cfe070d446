package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sync/errgroup"

	"github.com/smtpgate/smtpgate/gateway"
	"github.com/smtpgate/smtpgate/oidc"
)

// serve runs the gateway until ctx is done, then drains it.
func serve(ctx context.Context, cfg *Config, stderr io.Writer) error {
	log := newLogger(stderr, cfg.Log)
	v, err := oidc.New(cfg.oidcConfig(log))
	if err != nil {
		return fmt.Errorf("token verifier: %w", err)
	}
	gw, err := gateway.New(cfg.gatewayConfig(tokenVerifier{v}, log))
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	// Listen before serving, so a port in use is reported by run.
	type listener struct {
		name string
		l    net.Listener
		fn   func(net.Listener) error
	}
	var ls []listener
	defer func() {
		for _, l := range ls {
			l.l.Close()
		}
	}()
	for _, x := range []struct {
		name, addr string
		fn         func(net.Listener) error
	}{
		{"submission", *cfg.SMTP.Submission, gw.Serve},
		{"submissions", *cfg.SMTP.Submissions, gw.ServeTLS},
	} {
		if x.addr == "" {
			continue
		}
		l, err := net.Listen("tcp", x.addr)
		if err != nil {
			return fmt.Errorf("smtp.%s: %w", x.name, err)
		}
		ls = append(ls, listener{x.name, l, x.fn})
	}

	g, ctx := errgroup.WithContext(ctx)
	for _, l := range ls {
		log.Info("listening", "listener", l.name, "addr", l.l.Addr().String())
		g.Go(func() error { return l.fn(l.l) })
	}
	g.Go(func() error {
		<-ctx.Done()
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		if err := gw.Shutdown(sctx); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		return nil
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped")
	return nil
}

// tokenVerifier adapts the OIDC verifier to the gateway's seam.
type tokenVerifier struct{ v *oidc.Verifier }

func (a tokenVerifier) VerifyToken(ctx context.Context, token string) (gateway.Identity, error) {
	id, err := a.v.Verify(ctx, token)
	if oe, ok := errors.AsType[*oidc.Error](err); ok {
		return gateway.Identity{}, &gateway.AuthError{
			Status:       oe.Code,
			Scope:        oe.Scope,
			Temporary:    oe.Temporary,
			Reason:       oe.Reason,
			DiscoveryURL: a.v.DiscoveryURL(token),
		}
	}
	if err != nil {
		return gateway.Identity{}, err
	}
	return gateway.Identity{Subject: id.Issuer + "#" + id.Subject, Addresses: id.Addresses}, nil
}
