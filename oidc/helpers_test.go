package oidc_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

// clock is a fake time source for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

// newClock starts at the current second, so that tokens minted by
// testissuer with the real time look fresh.
func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// newVerifier returns a Verifier for iss with the fake clock, logging to
// the test's output. mods change the config before New.
func newVerifier(t testing.TB, iss *testissuer.Issuer, clk *clock, mods ...func(*oidc.Config)) *oidc.Verifier {
	t.Helper()
	cfg := oidc.Config{
		Issuers: []oidc.IssuerConfig{{Issuer: iss.URL, Audiences: []string{testissuer.Audience}}},
		Now:     clk.Now,
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mods {
		m(&cfg)
	}
	v, err := oidc.New(cfg)
	if err != nil {
		t.Fatalf("oidc.New() = %v", err)
	}
	return v
}

func quiet(c *oidc.Config) { c.Logger = nil }

func noCache(c *oidc.Config) { c.CacheSize = -1 }

func mustVerify(t testing.TB, v *oidc.Verifier, token string) *oidc.Identity {
	t.Helper()
	id, err := v.Verify(t.Context(), token)
	if err != nil {
		t.Fatalf("Verify() = %v, want success", err)
	}
	return id
}

// wantError checks that err is an *oidc.Error with code and, unless empty,
// reason.
func wantError(t testing.TB, err error, code, reason string) *oidc.Error {
	t.Helper()
	var e *oidc.Error
	if !errors.As(err, &e) {
		t.Fatalf("Verify() error = %v, want *oidc.Error %s (%s)", err, code, reason)
	}
	if e.Code != code || (reason != "" && e.Reason != reason) {
		t.Errorf("Verify() error = %v; code, reason = %q, %q, want %q, %q", e, e.Code, e.Reason, code, reason)
	}
	return e
}

// sign makes a compact JWS with any key and header, as an attacker could.
func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, header, claims map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{}}
	for k, v := range header {
		opts.ExtraHeaders[jose.HeaderKey(k)] = v
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatalf("jose.NewSigner(%s) = %v", alg, err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// claimsFor returns the claims testissuer would put in a token.
func claimsFor(iss *testissuer.Issuer, now time.Time) map[string]any {
	return map[string]any{
		"iss": iss.URL, "aud": testissuer.Audience, "sub": "mallory", "email": "alice@example.com",
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(),
	}
}

// unsigned returns a JWS with alg "none" and an empty signature.
func unsigned(header, claims map[string]any) string {
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

// tamper replaces the payload of a signed token, keeping its signature.
func tamper(t testing.TB, token string, change map[string]any) string {
	t.Helper()
	parts := strings.Split(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	for k, v := range change {
		c[k] = v
	}
	b, _ = json.Marshal(c)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

// publicKeyPEM fetches the issuer's JWKS as anyone can and returns key kid
// as PEM: the secret of the classic RS256 → HS256 confusion attack.
func publicKeyPEM(t testing.TB, iss *testissuer.Issuer, kid string) []byte {
	t.Helper()
	resp, err := http.Get(iss.URL + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	keys := set.Key(kid)
	if len(keys) == 0 {
		t.Fatalf("no key %q in JWKS", kid)
	}
	der, err := x509.MarshalPKIXPublicKey(keys[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
