package oidc_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

// FuzzVerify feeds arbitrary bearer tokens to a Verifier backed by a real
// issuer. Verify must never panic, and must fail with an *oidc.Error that
// does not echo the token.
func FuzzVerify(f *testing.F) {
	iss := testissuer.New(f)
	clk := newClock()
	v := newVerifier(f, iss, clk, quiet, func(c *oidc.Config) {
		c.Issuers[0].AliasesClaim = "aliases"
		c.Issuers[0].RequiredScopes = []string{"smtp.send"}
	})
	esKID := iss.AddKey(f, "ES256")
	attacker, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	valid := iss.Token(f, map[string]any{"scope": "smtp.send", "aliases": []string{"a@example.com"}})
	for _, seed := range []string{
		"", ".", "..", "a.b", "x.y.z", "a.b.c.d",
		"eyJhbGciOiJSUzI1NiJ9.e30.",
		"eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
		`{"payload":"e30","signatures":[]}`,
		valid,
		valid[:len(valid)/2],
		tamper(f, valid, map[string]any{"exp": "soon", "aud": 7, "scp": []any{1}}),
		iss.Sign(f, esKID, map[string]any{"typ": "at+jwt"}, map[string]any{"scp": []string{"smtp.send"}, "email_verified": "false"}),
		iss.Sign(f, "", map[string]any{"kid": nil}, map[string]any{"scope": "smtp.send", "aliases": "b@example.com"}),
		sign(f, jose.ES256, attacker, map[string]any{"kid": "k1"}, claimsFor(iss, clk.Now())),
		unsigned(map[string]any{"alg": "none"}, claimsFor(iss, clk.Now())),
	} {
		f.Add(seed)
	}
	codes := []string{oidc.CodeInvalidToken, oidc.CodeInsufficientScope, oidc.CodeInvalidRequest}
	f.Fuzz(func(t *testing.T, token string) {
		_ = v.DiscoveryURL(token)
		id, err := v.Verify(t.Context(), token)
		// The token checker runs the same checks and must agree.
		r := v.Explain(t.Context(), token)
		if r.Accepted() != (err == nil) {
			t.Fatalf("Explain accepted = %v, Verify error = %v", r.Accepted(), err)
		}
		if len(token) >= 16 && strings.Contains(r.String(), token) {
			t.Fatalf("Explain report contains the token")
		}
		if err == nil {
			if id == nil || id.Address == "" || len(id.Addresses) == 0 || id.Addresses[0] != id.Address {
				t.Fatalf("Verify() = %+v, nil: incomplete identity", id)
			}
			return
		}
		var e *oidc.Error
		if !errors.As(err, &e) || !slices.Contains(codes, e.Code) || e.Reason == "" {
			t.Fatalf("Verify() error = %#v, want an *oidc.Error with a code and reason", err)
		}
		if len(token) >= 16 && strings.Contains(e.Error(), token) {
			t.Fatalf("Verify() error %q contains the token", e)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	iss := testissuer.New(b)
	tok := iss.Token(b, map[string]any{"scope": "smtp.send"})
	for _, bc := range []struct {
		name string
		size int
	}{{"cached", 0}, {"uncached", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			v := newVerifier(b, iss, newClock(), quiet, func(c *oidc.Config) { c.CacheSize = bc.size })
			mustVerify(b, v, tok) // fetch keys outside the timer
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(b.Context(), tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
