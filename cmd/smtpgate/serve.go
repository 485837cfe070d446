package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/smtpgate/smtpgate/gateway"
	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/store"
	"github.com/smtpgate/smtpgate/web"
)

// serve runs the gateway (and the web app, if configured) until ctx is
// done, then drains them. ready, if not nil, is called once every listener
// is open.
func serve(ctx context.Context, cfg *Config, stderr io.Writer, ready func()) error {
	log := newLogger(stderr, cfg.Log)
	v, err := oidc.New(cfg.oidcConfig(log))
	if err != nil {
		return fmt.Errorf("token verifier: %w", err)
	}
	var (
		st  *store.Store
		key []byte
	)
	if cfg.appTokens() {
		st, key, err = openStore(ctx, cfg, log, storeServe)
		if err != nil {
			return err
		}
		// Closed last: it flushes the last-used times the sessions wrote.
		defer st.Close()
	}
	gcfg := cfg.gatewayConfig(tokenVerifier{v}, log)
	if st != nil {
		gcfg.Passwords = appTokenChecker{st}
		gcfg.Credentials = appTokenChecker{st}
	}
	gw, err := gateway.New(gcfg)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}

	// Listen before serving, so a port in use is reported by run.
	type listener struct {
		name  string
		l     net.Listener
		serve func(net.Listener) error
	}
	var ls []listener
	defer func() {
		for _, l := range ls {
			l.l.Close()
		}
	}()
	listen := func(name, addr string, serve func(net.Listener) error) error {
		if addr == "" {
			return nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		ls = append(ls, listener{name, l, serve})
		return nil
	}
	if err := listen("submission", *cfg.SMTP.Submission, gw.Serve); err != nil {
		return err
	}
	if err := listen("submissions", *cfg.SMTP.Submissions, gw.ServeTLS); err != nil {
		return err
	}
	var httpSrv *http.Server
	if cfg.Web.Listen != "" {
		wc := cfg.webSettings()
		wc.Store, wc.Key, wc.Logger = st, key, log
		setupWebConfig(&wc, cfg, v)
		h, err := web.New(wc)
		if err != nil {
			return err
		}
		httpSrv = web.NewServer(h, web.ServerLimits{}, log)
		if err := listen("web", cfg.Web.Listen, func(l net.Listener) error {
			if err := httpSrv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}); err != nil {
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, l := range ls {
		log.Info("listening", "listener", l.name, "addr", l.l.Addr().String())
		g.Go(func() error { return l.serve(l.l) })
	}
	if ready != nil {
		ready()
	}
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownTimeout)
		defer cancel()
		var errs []error
		if httpSrv != nil {
			errs = append(errs, httpSrv.Shutdown(sctx))
		}
		errs = append(errs, gw.Shutdown(sctx))
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// How openStore opens the store.
type storeMode int

const (
	storeServe storeMode = iota // may create the database and, for a new store, the key
	storeAdmin                  // the CLI: creates nothing
	storeList                   // the CLI's list: creates nothing, opens read-only
)

// openStore loads the token key and opens the store. Only serve creates
// anything: a new key is written (temp file, then linked into place) only
// after the store accepted it, which it does only if it holds no tokens
// made with another key.
func openStore(ctx context.Context, cfg *Config, log *slog.Logger, mode storeMode) (*store.Store, []byte, error) {
	key, err := store.ReadKey(cfg.Tokens.KeyFile)
	missing := errors.Is(err, fs.ErrNotExist)
	switch {
	case missing && mode != storeServe:
		return nil, nil, fmt.Errorf("tokens.key_file %s does not exist; the CLI never creates one (serve does, on first start): check -config", cfg.Tokens.KeyFile)
	case missing:
		key = store.NewKey()
	case err != nil:
		return nil, nil, fmt.Errorf("tokens.key_file: %w", err)
	}
	st, err := store.Open(ctx, cfg.Store.Driver, cfg.Store.DSN, store.Options{
		Prefix:         cfg.Tokens.Prefix,
		Key:            key,
		MaxLivePerUser: cfg.Tokens.MaxPerUser,
		Logger:         log,
		MustExist:      mode != storeServe,
		ReadOnly:       mode == storeList,
	})
	if errors.Is(err, store.ErrKeyMismatch) && missing {
		return nil, nil, fmt.Errorf("tokens.key_file %s is missing and the database holds app tokens: restore the key file from your backup (a new key would silently invalidate every token): %w", cfg.Tokens.KeyFile, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open store: %w", err)
	}
	if missing {
		if err := store.WriteKey(cfg.Tokens.KeyFile, key); err != nil {
			st.Close()
			return nil, nil, fmt.Errorf("tokens.key_file: %w", err)
		}
		log.Warn("created a new token key", "file", cfg.Tokens.KeyFile, "fingerprint", store.KeyFingerprint(key))
	}
	return st, key, nil
}

// webSettings is the web app's config from the file, without the
// runtime parts (store, key, logger) that serve adds.
func (c *Config) webSettings() web.Config {
	wc := web.Config{
		BaseURL:         c.Web.BaseURL,
		Issuer:          c.Web.Issuer,
		ClientID:        c.Web.ClientID,
		ClientSecret:    c.clientSecret,
		SessionTTL:      c.Web.SessionTTL,
		ReauthAge:       c.Web.ReauthAge,
		RequiredACR:     c.Web.RequiredACR,
		TrustedProxies:  c.proxies,
		TokenDefaultTTL: c.Tokens.DefaultTTL,
		TokenMaxTTL:     c.Tokens.MaxTTL,
		SMTPHost:        c.SMTP.Hostname,
		OutboxDir:       c.outboxDir,
	}
	if is := c.webIssuer(); is != nil {
		wc.IdentityClaim, wc.AliasesClaim = is.IdentityClaim, is.AliasesClaim
	}
	wc.SubmissionPort = port(*c.SMTP.Submission)
	wc.SubmissionsPort = port(*c.SMTP.Submissions)
	return wc
}

func port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
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
	return gateway.Identity{Subject: id.Issuer + "#" + id.Subject, Addresses: id.Addresses, Expires: id.Expiry}, nil
}

// appTokenChecker adapts the store to the gateway's PLAIN/LOGIN seam.
type appTokenChecker struct{ st *store.Store }

func (a appTokenChecker) CheckPassword(ctx context.Context, username, password, remote string) (gateway.Identity, error) {
	t, err := a.st.Check(ctx, username, password, remote)
	switch {
	case errors.Is(err, store.ErrInvalid), errors.Is(err, store.ErrRevoked), errors.Is(err, store.ErrExpired):
		return gateway.Identity{}, &gateway.AuthError{Reason: err.Error()}
	case err != nil:
		return gateway.Identity{}, &gateway.AuthError{Temporary: true, Reason: err.Error()}
	}
	return gateway.Identity{Subject: "apptoken:" + t.ID, Addresses: t.Senders, Expires: t.ExpiresAt, AppTokenID: t.ID}, nil
}

// CheckCredential is the gateway's re-check at each MAIL: an app token
// revoked (or expired) since AUTH stops the session.
func (a appTokenChecker) CheckCredential(ctx context.Context, id gateway.Identity) error {
	if id.AppTokenID == "" {
		return nil
	}
	t, err := a.st.Get(ctx, id.AppTokenID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &gateway.AuthError{Reason: "app token deleted"}
	case err != nil:
		return err
	case !t.RevokedAt.IsZero():
		return &gateway.AuthError{Reason: "app token revoked"}
	case !t.Live(time.Now()):
		return &gateway.AuthError{Reason: "app token expired"}
	}
	return nil
}
