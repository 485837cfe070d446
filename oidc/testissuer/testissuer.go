// Package testissuer runs a real OpenID provider on loopback for tests:
// discovery and JWKS over HTTP, and access tokens (RFC 9068) minted on
// demand. It builds on go-oidc's oidctest.Server.
package testissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	jose "github.com/go-jose/go-jose/v4"
)

// Audience is the "aud" that Token puts in tokens by default.
const Audience = "smtp-gateway"

// Issuer is a real OpenID provider on loopback for tests: discovery + JWKS over HTTP, tokens minted on demand.
type Issuer struct {
	URL string // the issuer identifier, also the server's base URL

	mu               sync.Mutex
	srv              oidctest.Server // PublicKeys guarded by mu
	priv             map[string]crypto.Signer
	current          string // kid Token signs with
	nextKID          int
	down             bool
	jwksFetches      int
	discoveryFetches int
}

// New starts an issuer on loopback with one RSA-2048 key, kid "k1". The
// server is closed by t.Cleanup.
func New(t testing.TB) *Issuer {
	t.Helper()
	i := &Issuer{priv: make(map[string]crypto.Signer)}
	hs := httptest.NewServer(http.HandlerFunc(i.serveHTTP))
	t.Cleanup(hs.Close)
	i.URL = hs.URL
	i.srv.SetIssuer(hs.URL)
	i.current = i.AddKey(t, "RS256")
	return i
}

func (i *Issuer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	i.mu.Lock()
	defer i.mu.Unlock()
	switch r.URL.Path {
	case "/keys":
		i.jwksFetches++
	case "/.well-known/openid-configuration":
		i.discoveryFetches++
	}
	if i.down {
		http.Error(w, "down for the test", http.StatusServiceUnavailable)
		return
	}
	i.srv.ServeHTTP(w, r)
}

// AddKey publishes a new key for alg (RS256, PS256, ES256, ES384, ES512,
// EdDSA, …) in the JWKS and returns its kid. Token keeps signing with the
// current key; Sign can use the new one.
func (i *Issuer) AddKey(t testing.TB, alg string) string {
	t.Helper()
	var (
		priv crypto.Signer
		err  error
	)
	switch {
	case strings.HasPrefix(alg, "RS"), strings.HasPrefix(alg, "PS"):
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case alg == "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case alg == "ES384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case alg == "ES512":
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case alg == "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("testissuer: AddKey(%q): unsupported algorithm", alg)
	}
	if err != nil {
		t.Fatalf("testissuer: generate %s key: %v", alg, err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.nextKID++
	kid := fmt.Sprintf("k%d", i.nextKID)
	i.priv[kid] = priv
	i.srv.PublicKeys = append(i.srv.PublicKeys, oidctest.PublicKey{PublicKey: priv.Public(), KeyID: kid, Algorithm: alg})
	return kid
}

// Rotate replaces the key Token signs with by a new RSA key with a new kid,
// and drops the old key from the JWKS.
func (i *Issuer) Rotate(t testing.TB) {
	t.Helper()
	kid := i.AddKey(t, "RS256")
	i.mu.Lock()
	defer i.mu.Unlock()
	old := i.current
	i.current = kid
	delete(i.priv, old)
	var keep []oidctest.PublicKey
	for _, k := range i.srv.PublicKeys {
		if k.KeyID != old {
			keep = append(keep, k)
		}
	}
	i.srv.PublicKeys = keep
}

// KID returns the kid of the key Token signs with.
func (i *Issuer) KID() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current
}

// SetDown makes discovery and JWKS answer 503 while down.
func (i *Issuer) SetDown(down bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.down = down
}

// JWKSFetches returns how many JWKS requests the server has had, including
// those answered with 503.
func (i *Issuer) JWKSFetches() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.jwksFetches
}

// DiscoveryFetches returns how many discovery requests the server has had.
func (i *Issuer) DiscoveryFetches() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.discoveryFetches
}

// DiscoveryURL returns the URL of the issuer's discovery document.
func (i *Issuer) DiscoveryURL() string {
	return i.URL + "/.well-known/openid-configuration"
}

// Token returns an RS256 access token signed with the current key. It fills
// iss, aud "smtp-gateway", sub "alice", email "alice@example.com", exp now+1h,
// iat now and scope "" unless claims overrides them; a claim set to nil is
// removed, and a time.Time value becomes a NumericDate.
func (i *Issuer) Token(t testing.TB, claims map[string]any) string {
	t.Helper()
	i.mu.Lock()
	kid := i.current
	priv := i.priv[kid]
	i.mu.Unlock()
	return oidctest.SignIDToken(priv, kid, "RS256", i.claimsJSON(t, claims))
}

// Sign is Token with a choice of key and JOSE header. kid names a key from
// New, Rotate or AddKey ("" for the current one) and the token is signed
// with that key's algorithm. header adds header parameters such as
// "typ": "at+jwt"; "kid": nil leaves the kid out.
func (i *Issuer) Sign(t testing.TB, kid string, header, claims map[string]any) string {
	t.Helper()
	i.mu.Lock()
	if kid == "" {
		kid = i.current
	}
	priv, ok := i.priv[kid]
	var alg string
	for _, k := range i.srv.PublicKeys {
		if k.KeyID == kid {
			alg = k.Algorithm
		}
	}
	i.mu.Unlock()
	if !ok {
		t.Fatalf("testissuer: Sign: no key %q", kid)
	}
	hdr := map[string]any{"kid": kid}
	maps.Copy(hdr, header)
	opts := &jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{}}
	for k, v := range hdr {
		if v != nil {
			opts.ExtraHeaders[jose.HeaderKey(k)] = v
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: priv}, opts)
	if err != nil {
		t.Fatalf("testissuer: new signer: %v", err)
	}
	jws, err := signer.Sign([]byte(i.claimsJSON(t, claims)))
	if err != nil {
		t.Fatalf("testissuer: sign: %v", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatalf("testissuer: serialize: %v", err)
	}
	return tok
}

func (i *Issuer) claimsJSON(t testing.TB, claims map[string]any) string {
	t.Helper()
	now := time.Now()
	c := map[string]any{
		"iss":   i.URL,
		"aud":   Audience,
		"sub":   "alice",
		"email": "alice@example.com",
		"exp":   now.Add(time.Hour).Unix(),
		"iat":   now.Unix(),
		"scope": "",
	}
	for k, v := range claims {
		switch v := v.(type) {
		case nil:
			delete(c, k)
		case time.Time:
			c[k] = v.Unix()
		default:
			c[k] = v
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("testissuer: marshal claims: %v", err)
	}
	return string(b)
}
