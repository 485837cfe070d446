package oidc_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func logTo(w *syncBuffer) func(*oidc.Config) {
	return func(c *oidc.Config) {
		c.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

func wantFetches(t *testing.T, iss *testissuer.Issuer, jwks, discovery int) {
	t.Helper()
	if got := iss.JWKSFetches(); got != jwks {
		t.Errorf("JWKSFetches() = %d, want %d", got, jwks)
	}
	if got := iss.DiscoveryFetches(); got != discovery {
		t.Errorf("DiscoveryFetches() = %d, want %d", got, discovery)
	}
}

// verifyAll verifies tokens concurrently and returns the errors.
func verifyAll(t *testing.T, v *oidc.Verifier, tokens []string) []error {
	t.Helper()
	errs := make([]error, len(tokens))
	var wg sync.WaitGroup
	for i, tok := range tokens {
		wg.Go(func() { _, errs[i] = v.Verify(t.Context(), tok) })
	}
	wg.Wait()
	return errs
}

func TestNewDoesNotContactIssuer(t *testing.T) {
	iss := testissuer.New(t)
	iss.SetDown(true)
	newVerifier(t, iss, newClock())
	wantFetches(t, iss, 0, 0)

	// Nor does it mind an issuer nobody listens for.
	cfg := oidc.Config{Issuers: []oidc.IssuerConfig{{Issuer: "http://127.0.0.1:1", Audiences: []string{"a"}}}}
	if _, err := oidc.New(cfg); err != nil {
		t.Errorf("oidc.New(unreachable issuer) = %v, want nil", err)
	}
}

// TestConcurrentFirstUse: tokens arriving together before any key is known
// share one discovery and one JWKS fetch, and all succeed.
func TestConcurrentFirstUse(t *testing.T) {
	iss := testissuer.New(t)
	v := newVerifier(t, iss, newClock(), quiet)
	var tokens []string
	for i := range 16 {
		tokens = append(tokens, iss.Token(t, map[string]any{"jti": i}))
	}
	for i, err := range verifyAll(t, v, tokens) {
		if err != nil {
			t.Errorf("Verify(token %d) = %v, want success", i, err)
		}
	}
	wantFetches(t, iss, 1, 1)
}

// TestUnknownKIDRateLimited: forged tokens with made-up kids cost at most
// one JWKS fetch per MinKeyRefresh.
func TestUnknownKIDRateLimited(t *testing.T) {
	iss := testissuer.New(t)
	clk := newClock()
	v := newVerifier(t, iss, clk, quiet, func(c *oidc.Config) { c.MinKeyRefresh = time.Minute })
	mustVerify(t, v, iss.Token(t, nil))
	wantFetches(t, iss, 1, 1)

	attacker, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forged := func() []string {
		var tokens []string
		for range 20 {
			tokens = append(tokens, sign(t, jose.RS256, attacker, map[string]any{"kid": rand.Text()}, claimsFor(iss, clk.Now())))
		}
		return tokens
	}
	check := func(errs []error) {
		t.Helper()
		for _, err := range errs {
			if e := wantError(t, err, oidc.CodeInvalidToken, "unknown signing key"); e.Temporary {
				t.Errorf("Verify(forged) Temporary = true, want false")
			}
		}
	}

	// Within MinKeyRefresh of the first fetch: none.
	check(verifyAll(t, v, forged()))
	wantFetches(t, iss, 1, 1)

	// Later: exactly one, shared by all.
	clk.Add(time.Minute)
	check(verifyAll(t, v, forged()))
	wantFetches(t, iss, 2, 1)
	check(verifyAll(t, v, forged()))
	wantFetches(t, iss, 2, 1)
}

// TestKeyRotation: a new kid at the provider is picked up once MinKeyRefresh
// has passed, and the dropped key stops working.
func TestKeyRotation(t *testing.T) {
	iss := testissuer.New(t)
	clk := newClock()
	v := newVerifier(t, iss, clk, noCache)
	old := iss.Token(t, nil)
	mustVerify(t, v, old)

	iss.Rotate(t)
	clk.Add(10 * time.Second)
	tok := iss.Token(t, nil)
	_, err := v.Verify(t.Context(), tok)
	wantError(t, err, oidc.CodeInvalidToken, "unknown signing key")
	wantFetches(t, iss, 1, 1)

	clk.Add(time.Minute)
	mustVerify(t, v, tok)
	wantFetches(t, iss, 2, 1)
	_, err = v.Verify(t.Context(), old)
	wantError(t, err, oidc.CodeInvalidToken, "unknown signing key")
	wantFetches(t, iss, 2, 1)
}

// TestKeyMaxAge: keys older than KeyMaxAge are fetched again on next use,
// discovery too.
func TestKeyMaxAge(t *testing.T) {
	iss := testissuer.New(t)
	clk := newClock()
	v := newVerifier(t, iss, clk, noCache, func(c *oidc.Config) { c.KeyMaxAge = 10 * time.Minute })
	mustVerify(t, v, iss.Token(t, nil))
	clk.Add(9 * time.Minute)
	mustVerify(t, v, iss.Token(t, nil))
	wantFetches(t, iss, 1, 1)
	clk.Add(time.Minute)
	mustVerify(t, v, iss.Token(t, nil))
	wantFetches(t, iss, 2, 2)
}

// TestIssuerDownWithCachedKeys: stale keys keep working while the provider
// is down; each failed fetch logs one warning, not one per token.
func TestIssuerDownWithCachedKeys(t *testing.T) {
	iss := testissuer.New(t)
	clk := newClock()
	var logs syncBuffer
	v := newVerifier(t, iss, clk, noCache, logTo(&logs), func(c *oidc.Config) {
		c.KeyMaxAge = 10 * time.Minute
		c.MinKeyRefresh = time.Minute
	})
	mustVerify(t, v, iss.Token(t, nil))

	iss.SetDown(true)
	clk.Add(11 * time.Minute)
	for range 5 {
		mustVerify(t, v, iss.Token(t, nil))
	}
	wantFetches(t, iss, 2, 2)
	if got := strings.Count(logs.String(), "level=WARN"); got != 1 {
		t.Errorf("warnings after one failed fetch = %d, want 1; log:\n%s", got, logs.String())
	}

	clk.Add(time.Minute)
	for range 5 {
		mustVerify(t, v, iss.Token(t, nil))
	}
	wantFetches(t, iss, 3, 3)
	if got := strings.Count(logs.String(), "level=WARN"); got != 2 {
		t.Errorf("warnings after two failed fetches = %d, want 2", got)
	}

	iss.SetDown(false)
	clk.Add(time.Minute)
	mustVerify(t, v, iss.Token(t, nil))
	wantFetches(t, iss, 4, 4)
	if !strings.Contains(logs.String(), "signing keys fetched again") {
		t.Errorf("no recovery line in log:\n%s", logs.String())
	}
}

// TestIssuerDownNoKeys: with no keys at all, an unreachable provider is a
// temporary failure (SMTP 454), retried once MinKeyRefresh has passed.
func TestIssuerDownNoKeys(t *testing.T) {
	iss := testissuer.New(t)
	iss.SetDown(true)
	clk := newClock()
	v := newVerifier(t, iss, clk)
	tok := iss.Token(t, nil)

	for range 3 {
		_, err := v.Verify(t.Context(), tok)
		if e := wantError(t, err, oidc.CodeInvalidToken, "signing keys unavailable"); !e.Temporary {
			t.Errorf("Verify() with provider down: Temporary = false, want true")
		}
	}
	wantFetches(t, iss, 0, 1)

	iss.SetDown(false)
	clk.Add(time.Minute)
	mustVerify(t, v, tok)
	wantFetches(t, iss, 1, 2)
}

// TestDiscoveryIssuerMismatch: discovery must name the configured issuer.
func TestDiscoveryIssuerMismatch(t *testing.T) {
	iss := testissuer.New(t)
	other := iss.URL + "/tenant"
	v := newVerifier(t, iss, newClock(), func(c *oidc.Config) {
		c.Issuers[0].Issuer = other
		c.Issuers[0].DiscoveryURL = iss.DiscoveryURL()
	})
	_, err := v.Verify(t.Context(), iss.Token(t, map[string]any{"iss": other}))
	e := wantError(t, err, oidc.CodeInvalidToken, "signing keys unavailable")
	if !e.Temporary || !strings.Contains(e.Error(), "does not match") {
		t.Errorf("Verify() = %v (Temporary %v), want a temporary discovery issuer mismatch", e, e.Temporary)
	}
	wantFetches(t, iss, 0, 1)
}

// TestGarbage: malformed tokens fail as invalid_token (or invalid_request
// when empty) and never make us fetch anything.
func TestGarbage(t *testing.T) {
	iss := testissuer.New(t)
	v := newVerifier(t, iss, newClock())
	valid := iss.Token(t, nil)
	h, p, _ := strings.Cut(valid, ".")
	p, _, _ = strings.Cut(p, ".")
	tests := []struct{ name, token, code string }{
		{"empty", "", oidc.CodeInvalidRequest},
		{"two parts", "a.b", oidc.CodeInvalidToken},
		{"three junk parts", "x.y.z", oidc.CodeInvalidToken},
		{"dots", "...", oidc.CodeInvalidToken},
		{"four parts", valid + ".x", oidc.CodeInvalidToken},
		{"huge", strings.Repeat("A", 1<<20), oidc.CodeInvalidToken},
		{"huge with a valid start", valid + strings.Repeat("A", 1<<16), oidc.CodeInvalidToken},
		{"JWS JSON serialization", `{"payload":"` + p + `","protected":"` + h + `","signature":"AA"}`, oidc.CodeInvalidToken},
		{"bearer prefix", "Bearer " + valid, oidc.CodeInvalidToken},
		{"padded base64", h + "==." + p + ".AA", oidc.CodeInvalidToken},
		{"payload not JSON", h + ".bm90IGpzb24.AA", oidc.CodeInvalidToken},
		{"iss not a string", h + "." + "eyJpc3MiOjF9" + ".AA", oidc.CodeInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(t.Context(), tc.token)
			if id != nil {
				t.Errorf("Verify() identity = %+v, want nil", id)
			}
			if e := wantError(t, err, tc.code, ""); e.Temporary {
				t.Errorf("Verify() Temporary = true, want false")
			}
		})
	}
	wantFetches(t, iss, 0, 0)
}

// TestTokenCache: a cached token is not checked again (so stale keys are not
// even looked at) until its exp, exactly.
func TestTokenCache(t *testing.T) {
	iss := testissuer.New(t)
	clk := newClock()
	v := newVerifier(t, iss, clk, func(c *oidc.Config) { c.KeyMaxAge = 10 * time.Minute })
	exp := clk.Now().Add(30 * time.Minute)
	tok := iss.Token(t, map[string]any{"exp": exp})
	id := mustVerify(t, v, tok)
	if !id.Expiry.Equal(exp) {
		t.Errorf("Verify() Expiry = %v, want %v", id.Expiry, exp)
	}
	wantFetches(t, iss, 1, 1)

	// The key is dropped at the provider and ours are stale: a real check
	// would now fetch keys and fail.
	iss.Rotate(t)
	clk.Add(20 * time.Minute)

	// Callers own what they get, from a miss or a hit.
	id.Addresses[0] = "mallory@example.com"
	for range 2 {
		got := mustVerify(t, v, tok)
		if got.Addresses[0] != "alice@example.com" {
			t.Errorf("cached Verify() Addresses = %q, want the original", got.Addresses)
		}
		got.Addresses[0] = "mallory@example.com"
	}
	clk.Set(exp.Add(-time.Nanosecond))
	mustVerify(t, v, tok)
	wantFetches(t, iss, 1, 1)

	// At exp the entry is gone, though the token is still within leeway.
	clk.Set(exp)
	_, err := v.Verify(t.Context(), tok)
	wantError(t, err, oidc.CodeInvalidToken, "unknown signing key")
	wantFetches(t, iss, 2, 2)
}

// TestTokenCacheDisabled: with CacheSize < 0 every call checks the token.
func TestTokenCacheDisabled(t *testing.T) {
	iss := testissuer.New(t)
	clk := newClock()
	v := newVerifier(t, iss, clk, noCache, func(c *oidc.Config) { c.KeyMaxAge = 10 * time.Minute })
	tok := iss.Token(t, nil)
	mustVerify(t, v, tok)
	iss.Rotate(t)
	clk.Add(20 * time.Minute)
	_, err := v.Verify(t.Context(), tok)
	wantError(t, err, oidc.CodeInvalidToken, "unknown signing key")
}

// TestNoTokenInLogs: neither logs nor errors ever contain a token.
func TestNoTokenInLogs(t *testing.T) {
	iss := testissuer.New(t)
	clk := newClock()
	var logs syncBuffer
	v := newVerifier(t, iss, clk, logTo(&logs), func(c *oidc.Config) { c.Issuers[0].RequiredScopes = []string{"smtp.send"} })
	tokens := []string{
		iss.Token(t, map[string]any{"scope": "smtp.send"}),
		iss.Token(t, nil),
		iss.Token(t, map[string]any{"exp": clk.Now().Add(-time.Hour)}),
		tamper(t, iss.Token(t, nil), map[string]any{"sub": "bob"}),
		iss.Sign(t, "", map[string]any{"kid": "nope"}, nil),
	}
	down := iss.Token(t, nil)
	tokens = append(tokens, down)
	for _, tok := range tokens {
		if tok == down {
			// Stale keys and a provider that is down: a warning.
			iss.SetDown(true)
			clk.Add(2 * time.Hour)
		}
		_, err := v.Verify(t.Context(), tok)
		sig := tok[strings.LastIndex(tok, ".")+1:]
		if err != nil && strings.Contains(err.Error(), sig) {
			t.Errorf("Verify() error %q contains the token", err)
		}
		if strings.Contains(logs.String(), sig) {
			t.Fatalf("log contains a token:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "token verified") {
		t.Errorf("log lacks the lines this test looks in:\n%s", logs.String())
	}
}

func TestDiscoveryURL(t *testing.T) {
	first, second := testissuer.New(t), testissuer.New(t)
	custom := second.URL + "/custom/.well-known/openid-configuration"
	v, err := oidc.New(oidc.Config{Issuers: []oidc.IssuerConfig{
		{Issuer: first.URL, Audiences: []string{"a"}},
		{Issuer: second.URL, Audiences: []string{"a"}, DiscoveryURL: custom},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, token, want string }{
		{"first issuer", first.Token(t, nil), first.DiscoveryURL()},
		{"second issuer, custom URL", second.Token(t, nil), custom},
		{"unknown issuer", second.Token(t, map[string]any{"iss": "https://evil.example.com"}), first.DiscoveryURL()},
		{"garbage", "x.y.z", first.DiscoveryURL()},
		{"empty", "", first.DiscoveryURL()},
	}
	for _, tc := range tests {
		if got := v.DiscoveryURL(tc.token); got != tc.want {
			t.Errorf("DiscoveryURL(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestJWKSUnusableKeys: a JWKS may hold keys we cannot or must not use
// (RFC 7517 section 5): those are skipped, the rest still work, and tokens
// signed with a skipped key fail.
func TestJWKSUnusableKeys(t *testing.T) {
	sigKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	encKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwk := func(key any, kid, use string) json.RawMessage {
		b, err := json.Marshal(jose.JSONWebKey{Key: key, KeyID: kid, Use: use, Algorithm: "RS256"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	keys := []json.RawMessage{
		json.RawMessage(`{"kty":"oct","kid":"hmac","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}`),
		json.RawMessage(`{"kty":"OKP","crv":"Ed448","kid":"ed448","x":"AAAA"}`),
		json.RawMessage(`{"kty":"RSA","kid":"broken"}`),
		jwk(&encKey.PublicKey, "enc", "enc"),
		jwk(sigKey, "private", "sig"), // private parameters published by mistake
		jwk(&sigKey.PublicKey, "good", "sig"),
	}
	var srvURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]string{"issuer": srvURL, "jwks_uri": srvURL + "/jwks"})
		case "/jwks":
			json.NewEncoder(w).Encode(map[string]any{"keys": keys})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	srvURL = srv.URL

	clk := newClock()
	v, err := oidc.New(oidc.Config{
		Issuers: []oidc.IssuerConfig{{Issuer: srv.URL, Audiences: []string{"a"}}},
		Now:     clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"iss": srv.URL, "aud": "a", "sub": "alice", "email": "alice@example.com", "exp": clk.Now().Add(time.Hour).Unix()}
	mustVerify(t, v, sign(t, jose.RS256, sigKey, map[string]any{"kid": "good"}, claims))
	for _, kid := range []string{"enc", "private"} {
		key := encKey
		if kid == "private" {
			key = sigKey
		}
		_, err := v.Verify(t.Context(), sign(t, jose.RS256, key, map[string]any{"kid": kid}, claims))
		wantError(t, err, oidc.CodeInvalidToken, "unknown signing key")
	}
}

// TestMicrosoftGraphToken: a token for Graph gets a reason that tells the
// admin what to change, and costs no key fetch.
func TestMicrosoftGraphToken(t *testing.T) {
	iss := testissuer.New(t)
	v := newVerifier(t, iss, newClock())
	for _, aud := range []any{"00000003-0000-0000-c000-000000000000", []string{"https://graph.microsoft.com/"}} {
		_, err := v.Verify(t.Context(), iss.Token(t, map[string]any{"aud": aud}))
		e := wantError(t, err, oidc.CodeInvalidToken, "")
		if !strings.Contains(e.Reason, "Microsoft Graph") || !strings.Contains(e.Reason, "expose an API") {
			t.Errorf("aud %v: Reason = %q, want advice about Microsoft Graph", aud, e.Reason)
		}
	}
	wantFetches(t, iss, 0, 0)
}
