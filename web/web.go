// Package web is smtpgate's small web app: a person signs in with the
// company's OpenID provider (authorization code flow with PKCE, RFC 7636),
// confirms on a consent page, and gets app-specific tokens to use as the
// SMTP password in mail clients that cannot do OAuth. Pages work without
// JavaScript; templates and static files are embedded.
package web

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	coreoidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-chi/chi/v5"
	"golang.org/x/oauth2"

	"github.com/smtpgate/smtpgate/clientsetup"
	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures the web app. Zero values take the documented defaults.
type Config struct {
	// BaseURL is where people reach the app, e.g.
	// https://mail-auth.example.com. The OAuth callback is
	// BaseURL + "/auth/callback". Required.
	BaseURL string
	// Issuer is the OpenID provider people sign in with. Required.
	Issuer string
	// ClientID and ClientSecret identify the app at the provider. An empty
	// secret makes it a public client (PKCE only).
	ClientID     string
	ClientSecret string
	// Scopes requested at sign-in. Default openid, email, profile.
	Scopes []string
	// IdentityClaim and AliasesClaim name the mailbox and the extra
	// addresses, with the same rules as for SMTP tokens. Default "email".
	IdentityClaim string
	AliasesClaim  string
	// Store keeps the app tokens. Required.
	Store *store.Store
	// Key encrypts and authenticates the session cookies: at least 32
	// bytes. Required.
	Key []byte
	// SessionTTL is how long a sign-in lasts. Default 1h.
	SessionTTL time.Duration
	// ReauthAge is how recent a sign-in must be to create a token. Default
	// 10m.
	ReauthAge time.Duration
	// TokenDefaultTTL and TokenMaxTTL bound app token expiry. Defaults 90
	// days and 365 days.
	TokenDefaultTTL time.Duration
	TokenMaxTTL     time.Duration
	// SMTPHost, SubmissionPort and SubmissionsPort are shown as the
	// settings to type into a mail client. Ports 0 are not shown.
	SMTPHost        string
	SubmissionPort  int
	SubmissionsPort int
	// Autoconfig and Thunderbird configure the setup pages, the
	// autoconfig document and the Thunderbird add-on; Audiences are the
	// web issuer's accepted audiences, which the IdP settings page names.
	Autoconfig  clientsetup.Autoconfig
	Thunderbird clientsetup.Thunderbird
	Audiences   []string
	// Verifier, if set, is the SMTP side's token verifier, for the token
	// checker at /debug/token.
	Verifier *oidc.Verifier
	// OutboxDir, if set, adds the Outbox pages, which show the messages
	// the development upstream filed there. For "smtpgate dev" only.
	OutboxDir string
	// HTTPClient talks to the provider. Default http.DefaultClient.
	HTTPClient *http.Client
	// Logger gets the audit log. Default: discard.
	Logger *slog.Logger
	// Now is the clock, for tests. Default time.Now.
	Now func() time.Time
}

type app struct {
	cfg      Config
	log      *slog.Logger
	tmpl     map[string]*template.Template
	sessions cookieCodec
	secure   bool // cookies get Secure: the base URL is https

	mu       sync.Mutex
	provider *coreoidc.Provider // discovered on first sign-in
}

// New returns the web app's handler.
func New(cfg Config) (http.Handler, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	tmpl, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	a := &app{
		cfg:      cfg,
		log:      cfg.Logger,
		tmpl:     tmpl,
		sessions: newCookieCodec(deriveKey(cfg.Key, "smtpgate web session v1")),
		secure:   strings.HasPrefix(cfg.BaseURL, "https://"),
	}
	return a.routes(), nil
}

func (c *Config) setDefaults() error {
	var errs []error
	u, err := url.Parse(c.BaseURL)
	if c.BaseURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("web: base_url %q must be an absolute http(s) URL", c.BaseURL))
	}
	c.BaseURL = strings.TrimSuffix(c.BaseURL, "/")
	if c.Issuer == "" {
		errs = append(errs, errors.New("web: issuer is required"))
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("web: client_id is required"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("web: a store is required"))
	}
	if len(c.Key) < 32 {
		errs = append(errs, errors.New("web: a key of at least 32 bytes is required"))
	}
	if len(c.Scopes) == 0 {
		c.Scopes = []string{coreoidc.ScopeOpenID, "email", "profile"}
	}
	if c.IdentityClaim == "" {
		c.IdentityClaim = "email"
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = time.Hour
	}
	if c.ReauthAge == 0 {
		c.ReauthAge = 10 * time.Minute
	}
	if c.TokenDefaultTTL == 0 {
		c.TokenDefaultTTL = 90 * 24 * time.Hour
	}
	if c.TokenMaxTTL == 0 {
		c.TokenMaxTTL = 365 * 24 * time.Hour
	}
	if c.TokenDefaultTTL > c.TokenMaxTTL {
		errs = append(errs, errors.New("web: the default token lifetime exceeds the maximum"))
	}
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return errors.Join(errs...)
}

// deriveKey separates the session key from the key it is made from.
func deriveKey(key []byte, purpose string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

func (a *app) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(securityHeaders)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	static, _ := fs.Sub(staticFS, "static")
	r.Handle("/static/*", http.StripPrefix("/static/", http.FileServerFS(static)))
	r.Get("/", a.home)
	r.Get("/login", a.login)
	r.Get("/auth/callback", a.callback)
	r.Get("/logout", a.logoutPage)
	r.Post("/logout", a.logout)
	r.Get("/tokens", a.tokens)
	r.Post("/tokens/new", a.newToken)
	r.Post("/tokens/confirm", a.confirmToken)
	r.Post("/tokens/{id}/revoke", a.revoke)
	r.Post("/tokens/revoke-all", a.revokeAll)
	a.setupRoutes(r)
	if a.cfg.OutboxDir != "" {
		r.Get("/outbox", a.outboxList)
		r.Get("/outbox/{id}", a.outboxMessage)
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		a.fail(w, r, http.StatusNotFound, "There is no such page.")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		a.fail(w, r, http.StatusMethodNotAllowed, "That does not work here.")
	})
	// Cross-site form posts are refused (Go 1.25's Sec-Fetch-Site and
	// Origin check), so no CSRF tokens are needed in the forms.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.log.Info("web: cross-origin request refused", "path", r.URL.Path, "origin", r.Header.Get("Origin"))
		a.fail(w, r, http.StatusForbidden, "This request came from another site and was refused.")
	}))
	return cop.Handler(r)
}

// securityHeaders keeps the pages to themselves: no framing, no referrer,
// no scripts or styles from elsewhere.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// oauth returns the OAuth 2.0 config, discovering the provider on first
// use so the app starts while the provider is down.
func (a *app) oauth(ctx context.Context) (*oauth2.Config, *coreoidc.Provider, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.provider == nil {
		p, err := coreoidc.NewProvider(coreoidc.ClientContext(ctx, a.cfg.HTTPClient), a.cfg.Issuer)
		if err != nil {
			return nil, nil, fmt.Errorf("discover %s: %w", a.cfg.Issuer, err)
		}
		a.provider = p
	}
	return &oauth2.Config{
		ClientID:     a.cfg.ClientID,
		ClientSecret: a.cfg.ClientSecret,
		Endpoint:     a.provider.Endpoint(),
		RedirectURL:  a.cfg.BaseURL + "/auth/callback",
		Scopes:       a.cfg.Scopes,
	}, a.provider, nil
}
