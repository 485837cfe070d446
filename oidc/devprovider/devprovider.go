// Package devprovider is an in-memory OpenID Provider for development: the
// tests of smtpgate and its one-command demo (smtpgate dev) sign in
// against it.
//
// It is built on the op package of github.com/zitadel/oidc/v3 and offers
// OpenID Connect Core 1.0 and Discovery 1.0 with the authorization code
// grant (RFC 6749) and PKCE S256 (RFC 7636), refresh tokens that rotate,
// loopback redirect URIs with any port for native apps (RFC 8252 section
// 7.3), token revocation (RFC 7009), introspection (RFC 7662), UserInfo and
// RP-initiated logout. Access tokens are JWTs in the style of RFC 9068
// (typ "at+jwt"), signed RS256, carrying the "email", "email_verified" and
// "aliases" claims the gateway reads.
//
// Users sign in on a plain HTML form with a username and password. There
// is no consent screen. With Config.SSO a login session in a cookie
// answers later authorizations, honouring prompt=login and max_age;
// without it every authorization asks again. Nothing here is fit for
// production use.
package devprovider

import (
	"crypto/rand"
	_ "embed"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Access tokens minted by Provider.AccessToken.
const (
	DevClientID = "smtpgate-dev"
	DevScope    = "openid email smtp.send"
)

// accessTokenType is the JOSE "typ" of access tokens (RFC 9068 section 2.1).
const accessTokenType jose.ContentType = "at+jwt"

// Paths under the issuer, besides zitadel's.
const (
	loginPath     = "/login"
	loggedOutPath = "/logged-out"
)

// Provider is an OpenID Provider. Serve its Handler at the address of
// Config.Issuer, on a listener from Listen. Safe for concurrent use.
type Provider struct {
	issuer           string
	st               *storage
	log              *slog.Logger
	forceNonLoopback bool
	sso              bool
	ignoreReauth     bool
	loginPage        *template.Template
	handler          http.Handler
}

// New validates cfg and builds a Provider. It does not listen.
func New(cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	key, err := newSigningKey(cfg.SigningKey)
	if err != nil {
		return nil, err
	}
	page, err := template.New("login").Parse(loginHTML)
	if err != nil {
		return nil, fmt.Errorf("devprovider: parse login page: %w", err)
	}
	base := strings.TrimSuffix(cfg.Issuer, "/")
	p := &Provider{
		issuer:           cfg.Issuer,
		log:              cfg.Logger,
		forceNonLoopback: cfg.ForceNonLoopback,
		sso:              cfg.SSO,
		ignoreReauth:     cfg.IgnoreReauth,
		loginPage:        page,
	}
	p.st = newStorage(cfg, key, func(id string) string {
		return base + loginPath + "?" + url.Values{"authRequestID": {id}}.Encode()
	})

	// The crypto key encrypts authorization codes (op.BuildAuthRequestCode).
	var cryptoKey [32]byte
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		return nil, fmt.Errorf("devprovider: crypto key: %w", err)
	}
	opConfig := &op.Config{
		CryptoKey:                cryptoKey,
		DefaultLogoutRedirectURI: base + loggedOutPath,
		CodeMethodS256:           true,
		AuthMethodPost:           true,
		GrantTypeRefreshToken:    true,
		SupportedScopes:          supportedScopes(cfg.Clients),
		SupportedClaims:          slices.Concat(op.DefaultSupportedClaims, []string{"scope", "aliases", "groups"}),
	}
	var opts []op.Option
	if cfg.AllowInsecure {
		opts = append(opts, op.WithAllowInsecure())
	}
	provider, err := op.NewProvider(opConfig, p.st, op.StaticIssuer(cfg.Issuer), opts...)
	if err != nil {
		return nil, fmt.Errorf("devprovider: %w", err)
	}
	endpoints := op.Endpoints{
		Authorization: op.NewEndpoint("authorize"),
		Token:         op.NewEndpoint("token"),
		Introspection: op.NewEndpoint("introspect"),
		Userinfo:      op.NewEndpoint("userinfo"),
		Revocation:    op.NewEndpoint("revoke"),
		EndSession:    op.NewEndpoint("end_session"),
		JwksURI:       op.NewEndpoint("keys"),
	}
	srv := &server{LegacyServer: op.NewLegacyServer(provider, endpoints), p: p}

	mux := http.NewServeMux()
	mux.HandleFunc("GET "+loginPath, p.serveLoginForm)
	mux.Handle("POST "+loginPath, http.NewCrossOriginProtection().Handler(http.HandlerFunc(p.serveLogin)))
	mux.HandleFunc("GET "+loggedOutPath, p.serveLoggedOut)
	mux.Handle("/", op.RegisterLegacyServer(srv, op.AuthorizeCallbackHandler(provider)))
	p.handler = mux
	if u, err := url.Parse(base); err == nil && u.Path != "" {
		p.handler = http.StripPrefix(u.Path, mux)
	}
	return p, nil
}

// supportedScopes lists the standard scopes and every client's.
func supportedScopes(clients []Client) []string {
	out := []string{"openid", "profile", "email", "offline_access"}
	for _, c := range clients {
		for _, s := range c.Scopes {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// Issuer returns Config.Issuer.
func (p *Provider) Issuer() string { return p.issuer }

// Handler serves discovery (/.well-known/openid-configuration), the JWKS
// (/keys), /authorize and its /authorize/callback, the login form (/login),
// /token, /introspect, /userinfo, /revoke, /end_session and the page it
// ends on (/logged-out), all under the issuer's path. When the issuer has a path, mount the
// handler there: mux.Handle("/idp/", p.Handler()) for issuer
// "http://127.0.0.1:8080/idp".
func (p *Provider) Handler() http.Handler { return p.handler }

// Listen is net.Listen("tcp", addr), but it refuses addresses other than
// loopback ones (127.0.0.0/8, ::1, "localhost") unless
// Config.ForceNonLoopback is set: the provider has known passwords.
func (p *Provider) Listen(addr string) (net.Listener, error) {
	if err := p.checkListenAddr(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devprovider: %w", err)
	}
	return ln, nil
}

func (p *Provider) checkListenAddr(addr string) error {
	if p.forceNonLoopback {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("devprovider: listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("devprovider: refusing to listen on %q: not a loopback address (set ForceNonLoopback to allow it)", addr)
}

// AccessToken mints a signed access token for a user, as if client
// "smtpgate-dev" had been granted scope "openid email smtp.send": for the
// demo's printed curl command, and for tests. Its claims are iss, sub,
// aud, exp, iat, jti, client_id, scope, email (if set), email_verified,
// aliases and groups (if any), then extra, which may override any of them;
// a nil value in extra removes the claim. UserInfo and introspection know
// the token. It fails for unknown and disabled users.
func (p *Provider) AccessToken(username string, extra map[string]any) (string, error) {
	at, u, err := p.st.mintRecord(username, DevClientID, strings.Fields(DevScope))
	if err != nil {
		return "", err
	}
	claims := p.st.accessTokenClaimsOf(at, u)
	for k, v := range extra {
		if v == nil {
			delete(claims, k)
		} else {
			claims[k] = v
		}
	}
	return p.st.key.sign(claims, accessTokenType)
}

// SetUserDisabled disables or re-enables an account, as when it dies at
// the identity provider. A disabled user cannot log in, redeem a code,
// refresh, use UserInfo or get an AccessToken; tokens already issued stay
// valid JWTs until they expire. Unknown usernames are logged and ignored.
func (p *Provider) SetUserDisabled(username string, disabled bool) {
	if !p.st.setDisabled(username, disabled) {
		p.log.Warn("devprovider: SetUserDisabled: unknown user", "user", username)
		return
	}
	p.log.Info("devprovider: user disabled state changed", "user", username, "disabled", disabled)
}
