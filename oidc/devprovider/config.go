package devprovider

import (
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
)

// Defaults for zero Config and Client fields.
const (
	DefaultAudience  = "smtp-gateway"
	DefaultAccessTTL = time.Hour
	minRSABits       = 2048
)

// defaultScopes are the scopes a Client may be granted when its Scopes is
// empty.
func defaultScopes() []string {
	return []string{"openid", "email", "profile", "offline_access"}
}

// A User is an account that can sign in on the login form.
type User struct {
	Subject       string   // "sub"; default Username
	Username      string   // login name typed in the form; required, unique
	Password      string   // required
	Email         string   // "email"; omitted from tokens when empty
	EmailVerified bool     // "email_verified"
	Name          string   // "name" (profile scope)
	Aliases       []string // "aliases" claim of access tokens, ID tokens and UserInfo, when not empty
	Groups        []string // "groups" claim of access tokens, ID tokens and UserInfo, when not empty
}

// A Client is a registered OAuth 2.0 client.
type Client struct {
	ID     string // required, unique
	Secret string // "" makes a public client, which must use PKCE (RFC 7636)
	// RedirectURIs are matched exactly. An http URI on a loopback host
	// (127.0.0.1, [::1], localhost) listed without a port also matches the
	// same URI with any port, as RFC 8252 section 7.3 asks for native apps
	// such as Thunderbird. The host must still match: "http://localhost"
	// does not admit "http://127.0.0.1:1234". The same URIs are accepted as
	// post_logout_redirect_uri at the end_session endpoint.
	RedirectURIs []string
	// PostLogoutRedirectURIs are accepted, besides RedirectURIs, as
	// post_logout_redirect_uri at the end_session endpoint, exactly.
	PostLogoutRedirectURIs []string
	// Scopes the client may be granted. Requested scopes outside this list
	// are dropped from the grant, as RFC 6749 section 3.3 allows. Default:
	// "openid email profile offline_access". List custom scopes such as
	// "smtp.send" here.
	Scopes []string
}

// Config configures a Provider. Zero fields take the documented defaults.
type Config struct {
	// Issuer is the URL the provider is reached at, e.g.
	// "http://127.0.0.1:9000". It is the "iss" of every token, exactly. If
	// it has a path, mount Handler under that path.
	Issuer  string
	Users   []User
	Clients []Client
	// Audience is the "aud" of access tokens; default "smtp-gateway".
	// ID tokens have the client ID as audience instead.
	Audience string
	// AccessTTL is the lifetime of access and ID tokens; default 1h.
	AccessTTL time.Duration
	// SigningKey signs every token (RS256). It must be an *rsa.PrivateKey
	// of at least 2048 bits. Default: a new RSA-2048 key. The "kid" is the
	// key's RFC 7638 thumbprint, so a persisted key keeps its kid.
	SigningKey crypto.Signer
	// AllowInsecure allows an http Issuer. The zitadel library refuses
	// one otherwise; loopback development needs it.
	AllowInsecure bool
	// ForceNonLoopback lets Listen bind addresses other than loopback ones.
	ForceNonLoopback bool
	// SSO keeps a login session in a browser cookie, as real providers
	// do: an authorization whose browser signed in before skips the form
	// and keeps the first auth_time, unless it asks for prompt=login or
	// its max_age has passed (OpenID Connect Core 1.0 section 3.1.2.1).
	// The end_session endpoint ends the user's login sessions.
	SSO bool
	// IgnoreReauth makes the SSO session answer even prompt=login and an
	// exceeded max_age, as a provider that does not honour them: for
	// testing that clients check auth_time themselves.
	IgnoreReauth bool
	// ACR is the "acr" claim of ID tokens; default none.
	ACR string
	// OmitAuthTime leaves auth_time out of ID tokens, as some providers
	// do unless asked: for testing that clients require it.
	OmitAuthTime bool
	// Logger receives the provider's own log lines; default: discards.
	// The zitadel library logs through slog's default logger.
	Logger *slog.Logger
}

// Validate reports every problem in c at once, joined with errors.Join.
func (c Config) Validate() error {
	var errs []error
	if c.Issuer == "" {
		errs = append(errs, errors.New("devprovider: empty issuer"))
	} else if err := op.ValidateIssuer(c.Issuer, c.AllowInsecure); errors.Is(err, op.ErrInvalidIssuerHTTPS) {
		errs = append(errs, fmt.Errorf("devprovider: issuer %q: %w (set AllowInsecure for an http issuer)", c.Issuer, err))
	} else if err != nil {
		errs = append(errs, fmt.Errorf("devprovider: issuer %q: %w", c.Issuer, err))
	}
	if c.AccessTTL < 0 {
		errs = append(errs, fmt.Errorf("devprovider: negative access token lifetime %v", c.AccessTTL))
	}
	if c.SigningKey != nil {
		k, ok := c.SigningKey.(*rsa.PrivateKey)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("devprovider: signing key is a %T, want *rsa.PrivateKey (tokens are signed RS256)", c.SigningKey))
		case k.N.BitLen() < minRSABits:
			errs = append(errs, fmt.Errorf("devprovider: signing key has %d bits, want at least %d", k.N.BitLen(), minRSABits))
		}
	}
	usernames := make(map[string]int)
	subjects := make(map[string]int)
	for i, u := range c.Users {
		if u.Username == "" {
			errs = append(errs, fmt.Errorf("devprovider: users[%d]: empty username", i))
		} else if j, dup := usernames[u.Username]; dup {
			errs = append(errs, fmt.Errorf("devprovider: users[%d]: duplicate username %q (also users[%d])", i, u.Username, j))
		} else {
			usernames[u.Username] = i
		}
		if u.Password == "" {
			errs = append(errs, fmt.Errorf("devprovider: users[%d]: empty password", i))
		}
		sub := u.subject()
		if j, dup := subjects[sub]; dup && sub != "" {
			errs = append(errs, fmt.Errorf("devprovider: users[%d]: duplicate subject %q (also users[%d])", i, sub, j))
		} else {
			subjects[sub] = i
		}
	}
	ids := make(map[string]int)
	for i, cl := range c.Clients {
		if cl.ID == "" {
			errs = append(errs, fmt.Errorf("devprovider: clients[%d]: empty id", i))
		} else if j, dup := ids[cl.ID]; dup {
			errs = append(errs, fmt.Errorf("devprovider: clients[%d]: duplicate id %q (also clients[%d])", i, cl.ID, j))
		} else {
			ids[cl.ID] = i
		}
		if len(cl.RedirectURIs) == 0 {
			errs = append(errs, fmt.Errorf("devprovider: clients[%d]: no redirect URIs", i))
		}
		for _, raw := range cl.RedirectURIs {
			if err := checkRedirectURI(raw); err != nil {
				errs = append(errs, fmt.Errorf("devprovider: clients[%d]: %w", i, err))
			}
		}
		if slices.Contains(cl.Scopes, "") {
			errs = append(errs, fmt.Errorf("devprovider: clients[%d]: empty scope", i))
		}
	}
	return errors.Join(errs...)
}

// checkRedirectURI applies RFC 6749 section 3.1.2: absolute, no fragment.
func checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("redirect URI: %w", err)
	case !u.IsAbs():
		return fmt.Errorf("redirect URI %q is not absolute", raw)
	case u.Fragment != "" || u.RawFragment != "":
		return fmt.Errorf("redirect URI %q has a fragment", raw)
	case (u.Scheme == "http" || u.Scheme == "https") && u.Host == "":
		return fmt.Errorf("redirect URI %q has no host", raw)
	}
	return nil
}

func (u User) subject() string {
	if u.Subject != "" {
		return u.Subject
	}
	return u.Username
}

func (c Config) withDefaults() Config {
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if c.AccessTTL == 0 {
		c.AccessTTL = DefaultAccessTTL
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
