package devprovider

import (
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// client is a registered Client as zitadel's op sees it.
type client struct {
	id           string
	secret       string
	redirectURIs []string
	postLogout   []string
	scopes       []string
	loginURL     func(authRequestID string) string
	idTokenTTL   time.Duration

	// loopback holds the registered http loopback redirect URIs that have
	// no port: RFC 8252 section 7.3 lets a native app pick any port.
	loopback []*url.URL
	// customScheme is set when a redirect URI has a private-use scheme
	// (RFC 8252 section 7.1), which zitadel accepts for native clients only.
	customScheme bool
}

var _ op.Client = (*client)(nil)

func newClient(c Client, loginURL func(string) string, idTokenTTL time.Duration) *client {
	cl := &client{
		id:           c.ID,
		secret:       c.Secret,
		redirectURIs: slices.Clone(c.RedirectURIs),
		postLogout:   slices.Clone(c.PostLogoutRedirectURIs),
		scopes:       slices.Clone(c.Scopes),
		loginURL:     loginURL,
		idTokenTTL:   idTokenTTL,
	}
	if len(cl.scopes) == 0 {
		cl.scopes = defaultScopes()
	}
	for _, raw := range c.RedirectURIs {
		if u, ok := portlessLoopback(raw); ok {
			cl.loopback = append(cl.loopback, u)
		}
		if u, err := url.Parse(raw); err == nil && u.Scheme != "http" && u.Scheme != "https" {
			cl.customScheme = true
		}
	}
	return cl
}

// portlessLoopback parses raw and reports whether it is an http URI on a
// loopback host without a port.
func portlessLoopback(raw string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Port() != "" || u.User != nil {
		return nil, false
	}
	return u, isLoopbackHost(u.Hostname())
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// redirectAllowed reports whether uri may receive this client's
// authorization responses: an exact match with a registered URI, or a
// registered portless loopback URI with a port added (RFC 8252 section
// 7.3). zitadel's own check for native clients ignores the host; this one,
// which runs first, does not.
func (c *client) redirectAllowed(uri string) bool {
	if slices.Contains(c.redirectURIs, uri) {
		return true
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "http" || u.Port() == "" || u.User != nil ||
		u.Fragment != "" || u.RawFragment != "" {
		return false
	}
	for _, r := range c.loopback {
		if r.Hostname() == u.Hostname() && samePath(r.EscapedPath(), u.EscapedPath()) && r.RawQuery == u.RawQuery {
			return true
		}
	}
	return false
}

// samePath treats an empty path as "/", as RFC 3986 section 6.2.3 does for
// http URIs.
func samePath(a, b string) bool {
	if a == "" {
		a = "/"
	}
	if b == "" {
		b = "/"
	}
	return a == b
}

func (c *client) public() bool { return c.secret == "" }

func (c *client) GetID() string { return c.id }

// RedirectURIs returns the registered URIs, and for a portless loopback
// URI with an empty path the same URI with path "/": zitadel compares
// paths exactly when it matches loopback redirects of native clients.
func (c *client) RedirectURIs() []string {
	uris := slices.Clone(c.redirectURIs)
	for _, u := range c.loopback {
		if u.Path == "" {
			v := *u
			v.Path = "/"
			uris = append(uris, v.String())
		}
	}
	return uris
}

// PostLogoutRedirectURIs are Client.PostLogoutRedirectURIs and the
// redirect URIs.
func (c *client) PostLogoutRedirectURIs() []string {
	return slices.Concat(c.postLogout, c.RedirectURIs())
}

// ApplicationType is native when a portless loopback or a private-use
// scheme redirect URI is registered: zitadel accepts those for native
// clients only.
func (c *client) ApplicationType() op.ApplicationType {
	switch {
	case len(c.loopback) > 0 || c.customScheme:
		return op.ApplicationTypeNative
	case c.public():
		return op.ApplicationTypeUserAgent
	default:
		return op.ApplicationTypeWeb
	}
}

func (c *client) AuthMethod() oidc.AuthMethod {
	if c.public() {
		return oidc.AuthMethodNone
	}
	// client_secret_post works too: op.Config.AuthMethodPost is set.
	return oidc.AuthMethodBasic
}

func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
}

func (c *client) LoginURL(authRequestID string) string { return c.loginURL(authRequestID) }

func (c *client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

func (c *client) IDTokenLifetime() time.Duration { return c.idTokenTTL }

// DevMode lets zitadel accept http redirect URIs for every client type.
// They must still be registered: see redirectAllowed.
func (c *client) DevMode() bool { return true }

func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(scopes []string) []string { return scopes }
}

func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(scopes []string) []string { return scopes }
}

func (c *client) IsScopeAllowed(scope string) bool { return slices.Contains(c.scopes, scope) }

// IDTokenUserinfoClaimsAssertion puts the profile and email claims into the
// ID token even though an access token is issued alongside it.
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }

func (c *client) ClockSkew() time.Duration { return 0 }

// grantScopes keeps the requested scopes this client may be granted, in
// request order, without duplicates.
func (c *client) grantScopes(requested []string) []string {
	var out []string
	for _, s := range requested {
		if c.IsScopeAllowed(s) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
