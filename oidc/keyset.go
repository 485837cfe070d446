package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	coreoidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

const (
	maxDocumentBytes = 1 << 20          // discovery document or JWKS
	fetchTimeout     = 30 * time.Second // a safety net over HTTPClient's own timeout
)

// A keySet is one issuer's signing keys, as a go-oidc KeySet. It replaces
// go-oidc's RemoteKeySet, which refetches the JWKS on every unknown kid, so
// that anyone could make us hammer the provider with forged tokens.
//
// Fetches (discovery, then JWKS) happen at most once per minRefresh, whatever
// the reason; concurrent callers share one fetch through singleflight. A
// failed fetch keeps the last good keys.
type keySet struct {
	issuer       string // discovery's "issuer" must equal it
	discoveryURL string
	algs         []jose.SignatureAlgorithm
	client       *http.Client
	now          func() time.Time
	minRefresh   time.Duration
	maxAge       time.Duration
	log          *slog.Logger
	group        singleflight.Group

	mu           sync.RWMutex
	keys         []jose.JSONWebKey // replaced, never modified in place
	fetchedAt    time.Time         // last successful JWKS fetch; zero before the first
	attemptedAt  time.Time         // last fetch attempt, successful or not
	lastErr      error             // outcome of the last attempt
	jwksURL      string            // from discovery; "" before the first success
	discoveredAt time.Time
}

var _ coreoidc.KeySet = (*keySet)(nil)

// keyErrKey is the context key under which Verifier passes a *keyErr to
// VerifySignature: go-oidc wraps KeySet errors with %v, which would lose
// Error.Temporary.
type keyErrKey struct{}

type keyErr struct{ err *Error }

// VerifySignature implements go-oidc's KeySet. go-oidc has already checked
// the algorithm against the issuer's list; we parse with the same list again
// so that this method is safe on its own.
func (ks *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := ks.verify(ctx, jwt)
	if err != nil {
		if slot, ok := ctx.Value(keyErrKey{}).(*keyErr); ok {
			slot.err = err
		}
		return nil, err
	}
	return payload, nil
}

func (ks *keySet) verify(ctx context.Context, jwt string) ([]byte, *Error) {
	jws, err := jose.ParseSignedCompact(jwt, ks.algs)
	if err != nil {
		return nil, invalidToken("malformed token", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, invalidToken("malformed token", errors.New("not exactly one signature"))
	}
	kid, alg := jws.Signatures[0].Header.KeyID, jws.Signatures[0].Header.Algorithm

	keys, fetchedAt := ks.snapshot()
	var fetchErr error
	refreshed := false
	if fetchedAt.IsZero() || ks.now().Sub(fetchedAt) >= ks.maxAge {
		fetchErr, refreshed = ks.refresh(ctx), true
		keys, _ = ks.snapshot()
	}
	cands := candidates(keys, kid, alg)
	if len(cands) == 0 && !refreshed {
		// Perhaps the provider rotated its keys. refresh is rate limited,
		// so forged tokens with made-up kids cost at most one fetch per
		// minRefresh.
		fetchErr = ks.refresh(ctx)
		keys, _ = ks.snapshot()
		cands = candidates(keys, kid, alg)
	}
	if len(cands) == 0 {
		if fetchErr != nil {
			return nil, &Error{Code: CodeInvalidToken, Temporary: true, Reason: "signing keys unavailable", Err: fetchErr}
		}
		if kid != "" {
			return nil, invalidToken("unknown signing key", nil)
		}
		return nil, invalidToken("no signing key for algorithm", nil)
	}
	var verr error
	for i := range cands {
		payload, err := jws.Verify(&cands[i])
		if err == nil {
			return payload, nil
		}
		verr = err
	}
	return nil, invalidToken("bad signature", verr)
}

func (ks *keySet) snapshot() ([]jose.JSONWebKey, time.Time) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.keys, ks.fetchedAt
}

// candidates returns the keys that may have signed a token with this kid and
// alg. A token without kid may have been signed by any key fit for alg.
func candidates(keys []jose.JSONWebKey, kid, alg string) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range keys {
		if kid != "" && k.KeyID != kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != alg {
			continue
		}
		if !keyFits(k.Key, alg) {
			continue
		}
		out = append(out, k)
	}
	return out
}

func keyFits(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case coreoidc.ES256:
			return k.Curve == elliptic.P256()
		case coreoidc.ES384:
			return k.Curve == elliptic.P384()
		case coreoidc.ES512:
			return k.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == coreoidc.EdDSA
	}
	return false
}

// refresh fetches the keys unless the last attempt was less than minRefresh
// ago, in which case it returns that attempt's error. Callers that arrive
// while a fetch is running wait for it. A caller whose ctx ends stops
// waiting; the fetch goes on for the others.
func (ks *keySet) refresh(ctx context.Context) error {
	ch := ks.group.DoChan("keys", func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		defer cancel()
		return nil, ks.fetch(ctx)
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return fmt.Errorf("wait for signing keys: %w", context.Cause(ctx))
	}
}

// fetch runs under singleflight, so never twice at once.
func (ks *keySet) fetch(ctx context.Context) error {
	now := ks.now()
	ks.mu.Lock()
	if !ks.attemptedAt.IsZero() && now.Sub(ks.attemptedAt) < ks.minRefresh {
		err := ks.lastErr
		ks.mu.Unlock()
		return err
	}
	ks.attemptedAt = now
	jwksURL, discoveredAt := ks.jwksURL, ks.discoveredAt
	failing := ks.lastErr != nil
	ks.mu.Unlock()

	keys, err := ks.load(ctx, now, jwksURL, discoveredAt)

	ks.mu.Lock()
	ks.lastErr = err
	if err == nil {
		ks.keys, ks.fetchedAt = keys, now
	}
	cached := len(ks.keys)
	ks.mu.Unlock()

	// One line per fetch, not per token: fetches are rate limited.
	switch {
	case err != nil:
		ks.log.Warn("oidc: fetch signing keys", "issuer", ks.issuer, "cached_keys", cached, "err", err)
	case failing:
		ks.log.Info("oidc: signing keys fetched again", "issuer", ks.issuer, "keys", len(keys))
	default:
		ks.log.Debug("oidc: signing keys fetched", "issuer", ks.issuer, "keys", len(keys))
	}
	return err
}

// load runs discovery when it has no jwks_uri or an old one, then fetches
// the JWKS. When discovery fails but an earlier jwks_uri is known, it goes
// on with that.
func (ks *keySet) load(ctx context.Context, now time.Time, jwksURL string, discoveredAt time.Time) ([]jose.JSONWebKey, error) {
	var discErr error
	if jwksURL == "" || now.Sub(discoveredAt) >= ks.maxAge {
		u, err := ks.discover(ctx)
		switch {
		case err == nil:
			jwksURL = u
			ks.mu.Lock()
			ks.jwksURL, ks.discoveredAt = u, now
			ks.mu.Unlock()
		case jwksURL == "":
			return nil, err
		default:
			discErr = err
		}
	}
	keys, err := ks.fetchJWKS(ctx, jwksURL)
	if err != nil {
		return nil, errors.Join(discErr, err)
	}
	if discErr != nil {
		ks.log.Warn("oidc: discovery failed, using the known jwks_uri", "issuer", ks.issuer, "err", discErr)
	}
	return keys, nil
}

func (ks *keySet) discover(ctx context.Context) (string, error) {
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := ks.getJSON(ctx, ks.discoveryURL, &doc); err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	// OpenID Connect Discovery 1.0 section 4.3.
	if doc.Issuer != ks.issuer {
		return "", fmt.Errorf("discovery: issuer %q does not match the configured %q", doc.Issuer, ks.issuer)
	}
	if doc.JWKSURI == "" {
		return "", errors.New("discovery: no jwks_uri")
	}
	if err := checkURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("discovery: jwks_uri: %w", err)
	}
	return doc.JWKSURI, nil
}

func (ks *keySet) fetchJWKS(ctx context.Context, u string) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := ks.getJSON(ctx, u, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		// RFC 7517 section 5: ignore keys we do not understand rather than
		// failing the set.
		var k jose.JSONWebKey
		if err := json.Unmarshal(raw, &k); err != nil {
			ks.log.Debug("oidc: skip jwks key", "issuer", ks.issuer, "err", err)
			continue
		}
		// No symmetric keys, private keys, or encryption keys.
		if !k.IsPublic() || !k.Valid() || (k.Use != "" && k.Use != "sig") {
			ks.log.Debug("oidc: skip jwks key", "issuer", ks.issuer, "kid", k.KeyID, "use", k.Use)
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("jwks: no usable signing keys at %s", u)
	}
	return keys, nil
}

func (ks *keySet) getJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := ks.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return fmt.Errorf("get %s: %w", u, err)
	}
	if len(body) > maxDocumentBytes {
		return fmt.Errorf("get %s: larger than %d bytes", u, maxDocumentBytes)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode %s: %w", u, err)
	}
	return nil
}
