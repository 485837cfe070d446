// Package web is smtpgate's small web app: a person signs in with the
// company's OpenID provider (authorization code flow with PKCE, RFC 7636),
// confirms on a consent page, and gets app-specific tokens to use as the
// SMTP password in mail clients that cannot do OAuth. Pages work without
// JavaScript; templates and static files are embedded.
//
// Sessions are records in the store; the cookie holds only a sealed
// random ID, so signing out (or "sign out everywhere") makes a copied
// cookie worthless. The sign-in time is the ID token's auth_time (OpenID
// Connect Core 1.0 section 2), and creating a token needs it recent:
// older sign-ins go back to the provider with max_age and prompt=login
// (section 3.1.2.1), and sign-out goes to its end_session_endpoint
// (OpenID Connect RP-Initiated Logout 1.0).
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
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	coreoidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-chi/chi/v5"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

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
	// ReauthAge is how recent the provider's auth_time must be to create a
	// token; older sign-ins are sent back with max_age=ReauthAge and
	// prompt=login. Default 10m.
	ReauthAge time.Duration
	// RequiredACR, if set, is sent as acr_values and the ID token's "acr"
	// must equal it (e.g. the provider's value for multi-factor sign-in).
	RequiredACR string
	// TrustedProxies are the addresses of reverse proxies whose
	// X-Forwarded-For names the client; the address recorded for a token
	// is the rightmost one not in these prefixes. Empty: RemoteAddr.
	TrustedProxies []netip.Prefix
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
	// the development upstream filed there. Set by "smtpgate dev" only;
	// no configuration key reaches it.
	OutboxDir string
	// HTTPClient talks to the provider (discovery, code exchange,
	// UserInfo). Default: a client with a 10s overall timeout, so a hung
	// provider costs one sign-in 10s and blocks nobody else.
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

	// The provider is discovered on first use. Discovery runs outside mu,
	// once at a time (singleflight), and each caller waits for it only as
	// long as its own request lives.
	mu       sync.Mutex
	provider *coreoidc.Provider
	discover singleflight.Group
}

// DefaultProviderTimeout bounds every request to the provider.
const DefaultProviderTimeout = 10 * time.Second

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

// Defaults for zero Config fields.
const (
	DefaultSessionTTL = time.Hour
	DefaultReauthAge  = 10 * time.Minute
)

// Validate reports every problem of the settings in c, joined, without
// I/O: what a configuration file can get wrong. Store and Key are
// checked by New.
func (c Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.BaseURL)
	if c.BaseURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("web: base_url %q must be an absolute http(s) URL", c.BaseURL))
	} else if u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("web: base_url %q must have no query or fragment", c.BaseURL))
	}
	if c.Issuer == "" {
		errs = append(errs, errors.New("web: issuer is required"))
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("web: client_id is required"))
	}
	if c.SessionTTL < 0 || c.ReauthAge < 0 || c.TokenDefaultTTL < 0 || c.TokenMaxTTL < 0 {
		errs = append(errs, errors.New("web: lifetimes must not be negative"))
	}
	if c.ReauthAge > 0 && c.ReauthAge < time.Second {
		errs = append(errs, fmt.Errorf("web: reauth_age %v: at least 1s (max_age is in seconds)", c.ReauthAge))
	}
	if c.TokenDefaultTTL != 0 && c.TokenMaxTTL != 0 && c.TokenDefaultTTL > c.TokenMaxTTL {
		errs = append(errs, errors.New("web: the default token lifetime exceeds the maximum"))
	}
	if strings.ContainsAny(c.RequiredACR, " \t\r\n") {
		errs = append(errs, fmt.Errorf("web: required_acr %q must be one value without spaces", c.RequiredACR))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() error {
	errs := []error{c.Validate()}
	c.BaseURL = strings.TrimSuffix(c.BaseURL, "/")
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
		c.SessionTTL = DefaultSessionTTL
	}
	if c.ReauthAge == 0 {
		c.ReauthAge = DefaultReauthAge
	}
	if c.TokenDefaultTTL == 0 {
		c.TokenDefaultTTL = store.DefaultTTL
	}
	if c.TokenMaxTTL == 0 {
		c.TokenMaxTTL = store.DefaultMaxTTL
	}
	if c.TokenDefaultTTL > c.TokenMaxTTL {
		errs = append(errs, errors.New("web: the default token lifetime exceeds the maximum"))
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: DefaultProviderTimeout}
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
	r.Use(a.securityHeaders, limitPosts)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	r.Handle("/static/*", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Files only: no directory listings.
		if strings.HasSuffix(r.URL.Path, "/") {
			a.fail(w, r, http.StatusNotFound, "There is no such page.")
			return
		}
		files.ServeHTTP(w, r)
	}))
	r.Get("/", a.home)
	r.Get("/login", a.login)
	r.Get("/auth/callback", a.callback)
	r.Get("/logout", a.logoutPage)
	r.Post("/logout", a.logout)
	r.Post("/logout/everywhere", a.logoutEverywhere)
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
// With an https base URL, HSTS tells browsers never to use http here.
func (a *app) securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if a.secure {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action "+a.formAction()+"; frame-ancestors 'none'; base-uri 'none'")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// formAction is the CSP form-action: browsers apply it to the redirects
// after a form post too, and signing out redirects to the provider's
// end_session_endpoint.
func (a *app) formAction() string {
	fa := "'self'"
	a.mu.Lock()
	p := a.provider
	a.mu.Unlock()
	if p == nil {
		return fa
	}
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if p.Claims(&meta) == nil && meta.EndSession != "" {
		if u, err := url.Parse(meta.EndSession); err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" {
			fa += " " + u.Scheme + "://" + u.Host
		}
	}
	return fa
}

// maxFormBytes bounds the body of every POST: the forms are small.
const maxFormBytes = 64 << 10

// limitPosts reads every POST body through MaxBytesReader and parses it
// here, so a handler never sees a body that is too big, multipart, or
// not a form: those get 413 or 415 before any work is done.
func limitPosts(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			http.Error(w, "forms only (application/x-www-form-urlencoded)", http.StatusUnsupportedMediaType)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				http.Error(w, "form too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// oauth returns the OAuth 2.0 config, discovering the provider on first
// use so the app starts while the provider is down. Discovery is not done
// under a lock: one discovery runs at a time, bounded by the HTTP client's
// timeout, and a caller stops waiting when its request ends.
func (a *app) oauth(ctx context.Context) (*oauth2.Config, *coreoidc.Provider, error) {
	a.mu.Lock()
	p := a.provider
	a.mu.Unlock()
	if p == nil {
		ch := a.discover.DoChan("", func() (any, error) {
			dctx := coreoidc.ClientContext(context.Background(), a.cfg.HTTPClient)
			p, err := coreoidc.NewProvider(dctx, a.cfg.Issuer)
			if err != nil {
				return nil, fmt.Errorf("discover %s: %w", a.cfg.Issuer, err)
			}
			a.mu.Lock()
			a.provider = p
			a.mu.Unlock()
			return p, nil
		})
		select {
		case res := <-ch:
			if res.Err != nil {
				return nil, nil, res.Err
			}
			p = res.Val.(*coreoidc.Provider)
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("discover %s: %w", a.cfg.Issuer, ctx.Err())
		}
	}
	return &oauth2.Config{
		ClientID:     a.cfg.ClientID,
		ClientSecret: a.cfg.ClientSecret,
		Endpoint:     p.Endpoint(),
		RedirectURL:  a.cfg.BaseURL + "/auth/callback",
		Scopes:       a.cfg.Scopes,
	}, p, nil
}

// remoteIP is the client's address: RemoteAddr, or behind trusted
// proxies the rightmost X-Forwarded-For entry that is not one of them.
func (a *app) remoteIP(r *http.Request) string {
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		host = h
	}
	if len(a.cfg.TrustedProxies) == 0 {
		return host
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !a.trusted(ip) {
		return host
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for _, h := range strings.Split(v, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(hops[i])
		if err != nil {
			return host // garbage from the client: keep what we know
		}
		if !a.trusted(hop) {
			return hop.Unmap().String()
		}
	}
	return host
}

func (a *app) trusted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range a.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
