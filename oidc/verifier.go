package oidc

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	coreoidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/smtpgate/smtpgate/mailaddr"
)

// Identity is who a verified token speaks for.
type Identity struct {
	Issuer    string
	Subject   string
	Address   string   // the mailbox from IdentityClaim, as given
	Addresses []string // Address first, then aliases; deduplicated case-insensitively
	Scopes    []string
	ClientID  string // azp or client_id, if present
	Expiry    time.Time
}

func (id *Identity) clone() *Identity {
	c := *id
	c.Addresses = slices.Clone(id.Addresses)
	c.Scopes = slices.Clone(id.Scopes)
	return &c
}

// Verifier checks bearer tokens against the configured issuers.
type Verifier struct {
	issuers []*issuer
	cache   *tokenCache // nil when disabled
	leeway  time.Duration
	now     func() time.Time
	log     *slog.Logger
}

type issuer struct {
	cfg      IssuerConfig // with defaults
	keys     *keySet
	verifier *coreoidc.IDTokenVerifier
}

// New validates cfg and returns a Verifier. It does not contact any
// provider, so the gateway starts while one is down: discovery and JWKS are
// fetched on first use, and retried at most once per MinKeyRefresh after a
// failure.
func New(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	v := &Verifier{leeway: cfg.Leeway, now: cfg.Now, log: cfg.Logger}
	if cfg.CacheSize > 0 {
		v.cache = newTokenCache(cfg.CacheSize)
	}
	for _, ic := range cfg.Issuers {
		ic = ic.withDefaults()
		algs := make([]jose.SignatureAlgorithm, len(ic.Algorithms))
		for i, a := range ic.Algorithms {
			algs[i] = jose.SignatureAlgorithm(a)
		}
		ks := &keySet{
			issuer:       ic.Issuer,
			discoveryURL: ic.DiscoveryURL,
			algs:         algs,
			client:       cfg.HTTPClient,
			now:          cfg.Now,
			minRefresh:   cfg.MinKeyRefresh,
			maxAge:       cfg.KeyMaxAge,
			log:          cfg.Logger,
		}
		v.issuers = append(v.issuers, &issuer{
			cfg:  ic,
			keys: ks,
			// go-oidc checks the signature, the algorithm and "iss". We
			// check the rest ourselves: it would compare "aud" to one
			// client ID, and it checks exp/nbf with its own leeway.
			verifier: coreoidc.NewVerifier(ic.Issuer, ks, &coreoidc.Config{
				SkipClientIDCheck:    true,
				SkipExpiryCheck:      true,
				SupportedSigningAlgs: slices.Clone(ic.Algorithms),
			}),
		})
	}
	return v, nil
}

// issuerFor returns the configured issuer a token claims to come from, or
// nil. It is the one place that maps "iss" to configuration: RFC 9068
// section 4 wants an exact match. Entra's multi-tenant issuers will be
// matched here too.
func (v *Verifier) issuerFor(iss string) *issuer {
	for _, is := range v.issuers {
		if is.cfg.Issuer == iss {
			return is
		}
	}
	return nil
}

// DiscoveryURL returns the discovery URL of the issuer that best fits the token
// (by its unverified "iss"), else the first configured issuer's. The SMTP layer
// puts it in the RFC 7628 failure JSON as "openid-configuration".
func (v *Verifier) DiscoveryURL(token string) string {
	if len(token) <= maxTokenBytes {
		if u, err := parseUnverified(token); err == nil {
			if is := v.issuerFor(u.iss); is != nil {
				return is.cfg.DiscoveryURL
			}
		}
	}
	return v.issuers[0].cfg.DiscoveryURL
}

// Verify checks a bearer token. Safe for concurrent use. Every error it
// returns is an *Error.
func (v *Verifier) Verify(ctx context.Context, token string) (*Identity, error) {
	if token == "" {
		return nil, &Error{Code: CodeInvalidRequest, Reason: "missing token"}
	}
	if len(token) > maxTokenBytes {
		return nil, invalidToken("token too large", nil)
	}
	now := v.now()
	var key [sha256.Size]byte
	if v.cache != nil {
		key = sha256.Sum256([]byte(token))
		if id, ok := v.cache.get(key, now); ok {
			return id.clone(), nil
		}
	}
	id, err := v.verify(ctx, token, now)
	if err != nil {
		return nil, err
	}
	v.log.Debug("oidc: token verified", "issuer", id.Issuer, "sub", id.Subject,
		"address", id.Address, "addresses", id.Addresses, "client_id", id.ClientID,
		"scopes", id.Scopes, "expiry", id.Expiry)
	if v.cache != nil {
		v.cache.put(key, id, id.Expiry, now)
	}
	return id.clone(), nil
}

func (v *Verifier) verify(ctx context.Context, token string, now time.Time) (*Identity, *Error) {
	return v.run(ctx, token, now, nil)
}

// run does every check of a token, in order, and stops at the first that
// fails, unless rec is not nil: then it records each check, and after the
// signature goes on through the checks of the claims, so Explain shows
// every reason at once. Verify and Explain share it, so what Explain says
// is what Verify does.
func (v *Verifier) run(ctx context.Context, token string, now time.Time, rec *Report) (*Identity, *Error) {
	u, err := parseUnverified(token)
	if err != nil {
		return nil, rec.add(CheckFormat, "", invalidToken("malformed token", err))
	}
	rec.add(CheckFormat, fmt.Sprintf("JWS, alg %s, kid %q, typ %q", u.alg, u.kid, u.typ), nil)
	if slices.ContainsFunc(u.aud, isMicrosoftGraph) {
		// Graph tokens carry a nonce in the header that makes their
		// signature unverifiable by anyone but Microsoft.
		return nil, rec.add(CheckAudience, fmt.Sprintf("aud %q", u.aud), invalidToken("token is for Microsoft Graph, which only Microsoft can verify: expose an API for smtpgate in Entra ID and request a token for its scope", nil))
	}
	is := v.issuerFor(u.iss)
	if is == nil {
		return nil, rec.add(CheckIssuer, fmt.Sprintf("iss %.200q; configured: %s", u.iss, v.issuerNames()), invalidToken("unknown issuer", fmt.Errorf("iss %.200q", u.iss)))
	}
	rec.add(CheckIssuer, fmt.Sprintf("iss %q is configured", u.iss), nil)
	sigDetail := fmt.Sprintf("alg %s, kid %q", u.alg, u.kid)
	// Checked here as well as by go-oidc so that tokens we would reject
	// anyway never make us fetch keys.
	if !slices.Contains(is.cfg.Algorithms, u.alg) {
		return nil, rec.add(CheckSignature, sigDetail+"; accepted: "+strings.Join(is.cfg.Algorithms, " "), invalidToken("signing algorithm not accepted", fmt.Errorf("alg %.20q", u.alg)))
	}
	if is.cfg.RequireATJWT && !isATJWT(u.typ) {
		return nil, rec.add(CheckSignature, fmt.Sprintf("typ %.40q, want at+jwt", u.typ), invalidToken("token type is not at+jwt", fmt.Errorf("typ %.40q", u.typ)))
	}
	slot := &keyErr{}
	idt, err := is.verifier.Verify(context.WithValue(ctx, keyErrKey{}, slot), token)
	if err != nil {
		if slot.err != nil {
			return nil, rec.add(CheckSignature, sigDetail, slot.err)
		}
		return nil, rec.add(CheckSignature, sigDetail, invalidToken("invalid token", err))
	}
	rec.add(CheckSignature, sigDetail+", verified with the issuer's key", nil)
	var c claims
	if err := idt.Claims(&c); err != nil {
		return nil, rec.add(CheckClaims, "", invalidToken("malformed claims", err))
	}
	return is.identity(c, now, v.leeway, rec)
}

func (v *Verifier) issuerNames() string {
	names := make([]string, len(v.issuers))
	for i, is := range v.issuers {
		names[i] = strconv.Quote(is.cfg.Issuer)
	}
	return strings.Join(names, ", ")
}

// identity applies the issuer's policy to a verified claims set: each
// check in turn, the first failure is the answer. With rec, every check
// runs and is recorded.
func (is *issuer) identity(c claims, now time.Time, leeway time.Duration, rec *Report) (*Identity, *Error) {
	cfg := &is.cfg
	id := &Identity{Issuer: cfg.Issuer}
	checks := []struct {
		name string
		fn   func() (string, *Error)
	}{
		{CheckIssuer, func() (string, *Error) {
			if iss, _, _ := c.str("iss"); iss != cfg.Issuer {
				return "", invalidToken("unknown issuer", nil)
			}
			return "", nil
		}},
		{CheckExpiry, func() (string, *Error) {
			// RFC 7519 section 4.1.4: "the current date/time MUST be
			// before the expiration date/time"; RFC 9068 section 2.2
			// makes exp required.
			exp, ok, err := c.date("exp")
			if err != nil || !ok {
				return "no exp claim", invalidToken("missing expiry", err)
			}
			id.Expiry = exp
			if !now.Before(exp.Add(leeway)) {
				return fmt.Sprintf("expired at %s, %s ago (leeway %s)", exp.Format(time.RFC3339), now.Sub(exp).Round(time.Second), leeway),
					invalidToken("token expired", fmt.Errorf("expired at %v", exp))
			}
			return fmt.Sprintf("expires at %s, in %s", exp.Format(time.RFC3339), exp.Sub(now).Round(time.Second)), nil
		}},
		{CheckValidity, func() (string, *Error) {
			if nbf, _, err := c.date("nbf"); err != nil {
				return "", invalidToken("malformed claims", err)
			} else if now.Add(leeway).Before(nbf) {
				return fmt.Sprintf("not before %s", nbf.Format(time.RFC3339)), invalidToken("token not yet valid", fmt.Errorf("not before %v", nbf))
			}
			if iat, _, err := c.date("iat"); err != nil {
				return "", invalidToken("malformed claims", err)
			} else if iat.After(now.Add(leeway)) {
				return fmt.Sprintf("issued at %s", iat.Format(time.RFC3339)), invalidToken("token issued in the future", fmt.Errorf("issued at %v", iat))
			}
			return "nbf and iat are not in the future", nil
		}},
		{CheckAudience, func() (string, *Error) {
			aud, err := c.list("aud")
			if err != nil {
				return "", invalidToken("malformed claims", err)
			}
			detail := fmt.Sprintf("aud %q; accepted: %q", aud, cfg.Audiences)
			if !slices.ContainsFunc(cfg.Audiences, func(a string) bool { return slices.Contains(aud, a) }) {
				return detail, invalidToken("audience not accepted", nil)
			}
			return detail, nil
		}},
		{CheckSubject, func() (string, *Error) {
			sub, _, err := c.str("sub")
			if err != nil || sub == "" {
				return "", invalidToken("missing subject", err)
			}
			id.Subject = sub
			return fmt.Sprintf("sub %q", sub), nil
		}},
		{CheckClient, func() (string, *Error) {
			clientID, _, err := c.str("azp")
			if err == nil && clientID == "" {
				clientID, _, err = c.str("client_id")
			}
			if err != nil {
				return "", invalidToken("malformed claims", err)
			}
			id.ClientID = clientID
			if len(cfg.ClientIDs) > 0 && !slices.Contains(cfg.ClientIDs, clientID) {
				return fmt.Sprintf("client %q; allowed: %q", clientID, cfg.ClientIDs), invalidToken("client not allowed", nil)
			}
			if len(cfg.ClientIDs) == 0 {
				return fmt.Sprintf("client %q; any client is allowed", clientID), nil
			}
			return fmt.Sprintf("client %q is allowed", clientID), nil
		}},
		{CheckIdentity, func() (string, *Error) {
			addr, addrs, e := mailbox(c, cfg.IdentityClaim, cfg.AliasesClaim)
			if e != nil {
				return "claim " + cfg.IdentityClaim, e
			}
			id.Address, id.Addresses = addr, addrs
			return fmt.Sprintf("%s %q; may send as %s", cfg.IdentityClaim, addr, strings.Join(addrs, ", ")), nil
		}},
		// Last: RFC 6750 section 3.1 keeps insufficient_scope for tokens
		// that are otherwise valid.
		{CheckScope, func() (string, *Error) {
			scopes, err := scopes(c)
			if err != nil {
				return "", invalidToken("malformed claims", err)
			}
			id.Scopes = scopes
			detail := fmt.Sprintf("scopes %q; required: %q", scopes, cfg.RequiredScopes)
			for _, s := range cfg.RequiredScopes {
				if !slices.Contains(scopes, s) {
					return detail, &Error{
						Code:   CodeInsufficientScope,
						Scope:  strings.Join(cfg.RequiredScopes, " "),
						Reason: "insufficient scope",
						Err:    fmt.Errorf("missing scope %q", s),
					}
				}
			}
			return detail, nil
		}},
	}
	var first *Error
	for _, ch := range checks {
		detail, err := ch.fn()
		if ch.name == CheckIssuer && err == nil {
			continue // already reported before the signature
		}
		rec.add(ch.name, detail, err)
		if err != nil && first == nil {
			first = err
			if rec == nil {
				return nil, err
			}
		}
	}
	if first != nil {
		return nil, first
	}
	return id, nil
}

// isMicrosoftGraph reports whether aud names Microsoft Graph.
func isMicrosoftGraph(aud string) bool {
	switch strings.TrimSuffix(strings.ToLower(aud), "/") {
	case "00000003-0000-0000-c000-000000000000", "https://graph.microsoft.com":
		return true
	}
	return false
}

// mailbox reads the addresses a claims set may send as: the identity claim
// first (refused when it is "email" and email_verified is false), then the
// aliases claim.
func mailbox(c claims, identityClaim, aliasesClaim string) (string, []string, *Error) {
	if identityClaim == "" {
		identityClaim = "email"
	}
	raw, _, err := c.str(identityClaim)
	if err != nil || raw == "" {
		return "", nil, invalidToken("missing "+identityClaim+" claim", err)
	}
	if identityClaim == "email" && c.isFalse("email_verified") {
		return "", nil, invalidToken("email not verified", nil)
	}
	// One address type for every package: a blank, non-ASCII or
	// Kelvin-sign mailbox is refused, never folded into someone else's.
	box, perr := mailaddr.Parse(raw)
	if perr != nil {
		return "", nil, invalidToken(identityClaim+" claim is not a usable mail address", perr)
	}
	addr := box.String()
	addrs := []string{addr}
	if aliasesClaim != "" {
		aliases, err := c.list(aliasesClaim)
		if err != nil {
			return "", nil, invalidToken("malformed "+aliasesClaim+" claim", err)
		}
		for _, a := range aliases {
			// An alias that is not a usable address is left out: it
			// cannot be matched safely, and the mailbox still works.
			pa, err := mailaddr.Parse(a)
			if err == nil && !slices.Contains(addrs, pa.String()) {
				addrs = append(addrs, pa.String())
			}
		}
	}
	return addr, addrs, nil
}

// MailAddresses applies the same mailbox rules as token verification to
// the JSON claims of an already verified token (the web sign-in's ID
// token), so a person may send as the same addresses over SMTP and in the
// web app. The mailbox comes first.
func MailAddresses(rawClaims []byte, identityClaim, aliasesClaim string) ([]string, error) {
	var c claims
	if err := json.Unmarshal(rawClaims, &c); err != nil {
		return nil, invalidToken("malformed claims", err)
	}
	_, addrs, e := mailbox(c, identityClaim, aliasesClaim)
	if e != nil {
		return nil, e
	}
	return addrs, nil
}

// scopes merges "scope" (RFC 9068 section 2.2.3, space-separated) and "scp"
// (Entra: space-separated string; Okta: array).
func scopes(c claims) ([]string, error) {
	var out []string
	for _, name := range []string{"scope", "scp"} {
		l, err := c.list(name)
		if err != nil {
			return nil, err
		}
		for _, s := range l {
			for _, f := range strings.Fields(s) {
				if !slices.Contains(out, f) {
					out = append(out, f)
				}
			}
		}
	}
	return out, nil
}
