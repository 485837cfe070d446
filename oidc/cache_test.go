package oidc

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

func TestTokenCacheLRU(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	exp := now.Add(time.Hour)
	key := func(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }
	c := newTokenCache(2)
	c.put(key("a"), &Identity{Subject: "a"}, exp, now)
	c.put(key("b"), &Identity{Subject: "b"}, exp, now)
	if _, ok := c.get(key("a"), now); !ok { // a is now the most recent
		t.Fatalf("get(a) missed, want hit")
	}
	c.put(key("c"), &Identity{Subject: "c"}, exp, now) // evicts b
	for _, tc := range []struct {
		key  string
		want bool
	}{{"a", true}, {"b", false}, {"c", true}} {
		if _, ok := c.get(key(tc.key), now); ok != tc.want {
			t.Errorf("get(%s) hit = %v, want %v", tc.key, ok, tc.want)
		}
	}
	if got := c.len(); got != 2 {
		t.Errorf("len() = %d, want 2", got)
	}

	// Entries die at exp exactly, and are removed then.
	if _, ok := c.get(key("a"), exp.Add(-time.Nanosecond)); !ok {
		t.Errorf("get(a) just before exp missed, want hit")
	}
	if _, ok := c.get(key("a"), exp); ok {
		t.Errorf("get(a) at exp hit, want miss")
	}
	if got := c.len(); got != 1 {
		t.Errorf("len() after expiry = %d, want 1", got)
	}

	// Already expired tokens are not stored.
	c.put(key("d"), &Identity{Subject: "d"}, now, now)
	if _, ok := c.get(key("d"), now.Add(-time.Hour)); ok {
		t.Errorf("get(d) hit, want miss for a token put at its exp")
	}
}

// TestVerifierCacheBound: however many tokens are verified, the cache holds
// at most CacheSize.
func TestVerifierCacheBound(t *testing.T) {
	iss := testissuer.New(t)
	v, err := New(Config{
		Issuers:   []IssuerConfig{{Issuer: iss.URL, Audiences: []string{testissuer.Audience}}},
		CacheSize: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := v.Verify(t.Context(), iss.Token(t, map[string]any{"jti": fmt.Sprint(i)})); err != nil {
			t.Fatalf("Verify() = %v", err)
		}
		if got, want := v.cache.len(), min(i+1, 3); got != want {
			t.Errorf("after %d tokens cache len() = %d, want %d", i+1, got, want)
		}
	}
}
