package oidc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	coreoidc "github.com/coreos/go-oidc/v3/oidc"
)

// Defaults for zero Config and IssuerConfig fields.
const (
	defaultLeeway        = 60 * time.Second
	defaultMinKeyRefresh = time.Minute
	defaultKeyMaxAge     = time.Hour
	defaultCacheSize     = 10000
	defaultHTTPTimeout   = 10 * time.Second
	defaultIdentityClaim = "email"
	discoveryPath        = "/.well-known/openid-configuration"
)

// IssuerConfig configures one trusted OpenID provider.
type IssuerConfig struct {
	Issuer         string   // exact "iss" value; also the discovery base
	DiscoveryURL   string   // optional; default Issuer (less a trailing "/") + "/.well-known/openid-configuration"
	Audiences      []string // required: "aud" must contain at least one
	RequiredScopes []string // each must appear in "scope" (space-separated string) or "scp" (string or array)
	ClientIDs      []string // optional allow-list checked against "azp", else "client_id"
	RequireATJWT   bool     // require JOSE header typ "at+jwt" (or "application/at+jwt"), RFC 9068
	IdentityClaim  string   // claim naming the mailbox; default "email"
	AliasesClaim   string   // optional claim: a string or array of extra addresses the user may send as
	Algorithms     []string // allowed JWS algs; default RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA. "none" and HS* are rejected by Validate.
}

// Config configures a Verifier. Zero fields take the documented defaults.
type Config struct {
	Issuers       []IssuerConfig
	Leeway        time.Duration    // clock leeway for exp/nbf/iat; 0 means default 60s; negative invalid
	MinKeyRefresh time.Duration    // minimum interval between JWKS fetches caused by an unknown kid; default 1m
	KeyMaxAge     time.Duration    // keys (and discovery) older than this are refetched on next use, once per MinKeyRefresh; a failure keeps them; default 1h
	CacheSize     int              // max entries in the verified-token cache; default 10000; <0 disables
	HTTPClient    *http.Client     // default: a client with a 10s timeout
	Logger        *slog.Logger     // default: discards
	Now           func() time.Time // for tests; default time.Now
}

// Validate reports every problem in c at once, joined with errors.Join.
func (c Config) Validate() error {
	var errs []error
	if len(c.Issuers) == 0 {
		errs = append(errs, errors.New("oidc: no issuers configured"))
	}
	seen := make(map[string]int)
	for i, ic := range c.Issuers {
		for _, err := range ic.problems() {
			errs = append(errs, fmt.Errorf("oidc: issuers[%d]: %w", i, err))
		}
		if j, dup := seen[ic.Issuer]; dup && ic.Issuer != "" {
			errs = append(errs, fmt.Errorf("oidc: issuers[%d]: duplicate issuer %q (also issuers[%d])", i, ic.Issuer, j))
		} else {
			seen[ic.Issuer] = i
		}
	}
	if c.Leeway < 0 {
		errs = append(errs, fmt.Errorf("oidc: negative leeway %v", c.Leeway))
	}
	if c.MinKeyRefresh < 0 {
		errs = append(errs, fmt.Errorf("oidc: negative min key refresh %v", c.MinKeyRefresh))
	}
	if c.KeyMaxAge < 0 {
		errs = append(errs, fmt.Errorf("oidc: negative key max age %v", c.KeyMaxAge))
	}
	return errors.Join(errs...)
}

func (ic IssuerConfig) problems() []error {
	var errs []error
	if ic.Issuer == "" {
		errs = append(errs, errors.New("empty issuer"))
	} else if err := checkURL(ic.Issuer); err != nil {
		errs = append(errs, fmt.Errorf("issuer: %w", err))
	}
	if ic.DiscoveryURL != "" {
		if err := checkURL(ic.DiscoveryURL); err != nil {
			errs = append(errs, fmt.Errorf("discovery url: %w", err))
		}
	}
	if len(ic.Audiences) == 0 {
		errs = append(errs, errors.New("no audiences"))
	}
	for _, a := range ic.Audiences {
		if a == "" {
			errs = append(errs, errors.New("empty audience"))
		}
	}
	for _, s := range ic.RequiredScopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			errs = append(errs, fmt.Errorf("required scope %q is empty or contains spaces", s))
		}
	}
	for _, id := range ic.ClientIDs {
		if id == "" {
			errs = append(errs, errors.New("empty client id"))
		}
	}
	for _, alg := range ic.Algorithms {
		if err := checkAlg(alg); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// checkURL accepts absolute https URLs, and http URLs for loopback hosts
// only: keys fetched over plain http would let anyone on the path mint tokens.
// OpenID Connect Discovery 1.0 section 3 also rules out query and fragment.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	switch {
	case u.Host == "":
		return fmt.Errorf("%q is not an absolute URL", raw)
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return fmt.Errorf("%q: http is allowed for loopback hosts only, use https", raw)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%q: scheme must be https", raw)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Errorf("%q: must have no query or fragment", raw)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkAlg(alg string) error {
	switch alg {
	case coreoidc.RS256, coreoidc.RS384, coreoidc.RS512,
		coreoidc.PS256, coreoidc.PS384, coreoidc.PS512,
		coreoidc.ES256, coreoidc.ES384, coreoidc.ES512,
		coreoidc.EdDSA:
		return nil
	case "none", "":
		return fmt.Errorf("signing algorithm %q is never accepted", alg)
	}
	if strings.HasPrefix(strings.ToUpper(alg), "HS") {
		return fmt.Errorf("signing algorithm %q: HMAC needs a secret shared with the provider, not accepted", alg)
	}
	return fmt.Errorf("unsupported signing algorithm %q", alg)
}

func defaultAlgorithms() []string {
	return []string{
		coreoidc.RS256, coreoidc.RS384, coreoidc.RS512,
		coreoidc.PS256, coreoidc.PS384, coreoidc.PS512,
		coreoidc.ES256, coreoidc.ES384, coreoidc.ES512,
		coreoidc.EdDSA,
	}
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Leeway == 0 {
		c.Leeway = defaultLeeway
	}
	if c.MinKeyRefresh == 0 {
		c.MinKeyRefresh = defaultMinKeyRefresh
	}
	if c.KeyMaxAge == 0 {
		c.KeyMaxAge = defaultKeyMaxAge
	}
	if c.CacheSize == 0 {
		c.CacheSize = defaultCacheSize
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: defaultHTTPTimeout}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (ic IssuerConfig) withDefaults() IssuerConfig {
	if ic.DiscoveryURL == "" {
		ic.DiscoveryURL = strings.TrimSuffix(ic.Issuer, "/") + discoveryPath
	}
	if ic.IdentityClaim == "" {
		ic.IdentityClaim = defaultIdentityClaim
	}
	if len(ic.Algorithms) == 0 {
		ic.Algorithms = defaultAlgorithms()
	}
	return ic
}
