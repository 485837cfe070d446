package oidc_test

import (
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

// TestVerify covers the claim and header policy, one case per rule, against
// a real issuer on loopback.
func TestVerify(t *testing.T) {
	iss := testissuer.New(t)
	esKID := iss.AddKey(t, "ES256")
	psKID := iss.AddKey(t, "PS256")
	edKID := iss.AddKey(t, "EdDSA")
	attacker, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	hmacSecret := publicKeyPEM(t, iss, "k1")

	tok := func(claims map[string]any) func(*testing.T, time.Time) string {
		return func(t *testing.T, _ time.Time) string { return iss.Token(t, claims) }
	}
	withHeader := func(kid string, header, claims map[string]any) func(*testing.T, time.Time) string {
		return func(t *testing.T, _ time.Time) string { return iss.Sign(t, kid, header, claims) }
	}
	at := func(f func(now time.Time) map[string]any) func(*testing.T, time.Time) string {
		return func(t *testing.T, now time.Time) string { return iss.Token(t, f(now)) }
	}
	requireScope := func(ic *oidc.IssuerConfig) { ic.RequiredScopes = []string{"smtp.send"} }
	allowClients := func(ic *oidc.IssuerConfig) { ic.ClientIDs = []string{"thunderbird", "k9"} }
	requireATJWT := func(ic *oidc.IssuerConfig) { ic.RequireATJWT = true }
	aliases := func(ic *oidc.IssuerConfig) { ic.AliasesClaim = "aliases" }

	tests := []struct {
		name   string
		cfg    func(*oidc.IssuerConfig)
		token  func(t *testing.T, now time.Time) string
		code   string // "" for success
		reason string
		scope  string
		want   *oidc.Identity // checked when set
	}{
		{
			name: "valid RS256",
			token: at(func(now time.Time) map[string]any {
				return map[string]any{"scope": "openid smtp.send", "azp": "thunderbird", "exp": now.Add(time.Hour)}
			}),
			want: &oidc.Identity{
				Subject: "alice", Address: "alice@example.com", Addresses: []string{"alice@example.com"},
				Scopes: []string{"openid", "smtp.send"}, ClientID: "thunderbird",
			},
		},
		{name: "valid ES256", token: withHeader(esKID, nil, nil)},
		{name: "valid PS256", token: withHeader(psKID, nil, nil)},
		{name: "valid EdDSA", token: withHeader(edKID, nil, nil)},
		{name: "no kid tries keys of the alg", token: withHeader("", map[string]any{"kid": nil}, nil)},
		{name: "no kid, ES256", token: withHeader(esKID, map[string]any{"kid": nil}, nil)},

		// Lifetime, with the default 60s leeway.
		{name: "expired", token: at(func(now time.Time) map[string]any { return map[string]any{"exp": now.Add(-2 * time.Minute)} }), code: oidc.CodeInvalidToken, reason: "token expired"},
		{name: "expired within leeway", token: at(func(now time.Time) map[string]any { return map[string]any{"exp": now.Add(-30 * time.Second)} })},
		{name: "expired exactly at end of leeway", token: at(func(now time.Time) map[string]any { return map[string]any{"exp": now.Add(-60 * time.Second)} }), code: oidc.CodeInvalidToken, reason: "token expired"},
		{name: "no exp", token: tok(map[string]any{"exp": nil}), code: oidc.CodeInvalidToken, reason: "missing expiry"},
		// One address type everywhere: a blank mailbox must not become
		// "nobody" (the admin) and the Kelvin sign must not fold into k.
		{name: "blank email", token: tok(map[string]any{"email": " "}), code: oidc.CodeInvalidToken, reason: "email claim is not a usable mail address"},
		{name: "Kelvin-sign email", token: tok(map[string]any{"email": "\u212Aevin@example.com"}), code: oidc.CodeInvalidToken, reason: "email claim is not a usable mail address"},
		{name: "exp not a number", token: tok(map[string]any{"exp": "tomorrow"}), code: oidc.CodeInvalidToken},
		{name: "exp out of range", token: tok(map[string]any{"exp": 1e300}), code: oidc.CodeInvalidToken},
		{name: "nbf in the future", token: at(func(now time.Time) map[string]any { return map[string]any{"nbf": now.Add(2 * time.Minute)} }), code: oidc.CodeInvalidToken, reason: "token not yet valid"},
		{name: "nbf within leeway", token: at(func(now time.Time) map[string]any { return map[string]any{"nbf": now.Add(30 * time.Second)} })},
		{name: "iat in the future", token: at(func(now time.Time) map[string]any { return map[string]any{"iat": now.Add(2 * time.Minute)} }), code: oidc.CodeInvalidToken, reason: "token issued in the future"},
		{name: "iat within leeway", token: at(func(now time.Time) map[string]any { return map[string]any{"iat": now.Add(30 * time.Second)} })},

		// Issuer and audience.
		{name: "unknown issuer", token: tok(map[string]any{"iss": "https://evil.example.com"}), code: oidc.CodeInvalidToken, reason: "unknown issuer"},
		{name: "issuer with trailing slash", token: tok(map[string]any{"iss": iss.URL + "/"}), code: oidc.CodeInvalidToken, reason: "unknown issuer"},
		{name: "no issuer", token: tok(map[string]any{"iss": nil}), code: oidc.CodeInvalidToken, reason: "unknown issuer"},
		{name: "wrong audience", token: tok(map[string]any{"aud": "other-api"}), code: oidc.CodeInvalidToken, reason: "audience not accepted"},
		{name: "no audience", token: tok(map[string]any{"aud": nil}), code: oidc.CodeInvalidToken, reason: "audience not accepted"},
		{name: "one of several audiences", token: tok(map[string]any{"aud": []string{"other-api", testissuer.Audience}})},
		{
			name:  "one of several configured audiences",
			cfg:   func(ic *oidc.IssuerConfig) { ic.Audiences = []string{"api://smtp", "other"} },
			token: tok(map[string]any{"aud": "other"}),
		},
		{name: "no subject", token: tok(map[string]any{"sub": nil}), code: oidc.CodeInvalidToken, reason: "missing subject"},

		// Scopes.
		{name: "scope missing", cfg: requireScope, token: tok(map[string]any{"scope": "openid email"}), code: oidc.CodeInsufficientScope, scope: "smtp.send"},
		{name: "scope present", cfg: requireScope, token: tok(map[string]any{"scope": "openid smtp.send"})},
		{name: "scp array missing", cfg: requireScope, token: tok(map[string]any{"scp": []string{"openid", "email"}}), code: oidc.CodeInsufficientScope, scope: "smtp.send"},
		{
			name: "scp array present", cfg: requireScope, token: tok(map[string]any{"scope": nil, "scp": []string{"smtp.send", "openid"}}),
			want: &oidc.Identity{Subject: "alice", Address: "alice@example.com", Addresses: []string{"alice@example.com"}, Scopes: []string{"smtp.send", "openid"}},
		},
		{name: "scp string present", cfg: requireScope, token: tok(map[string]any{"scope": nil, "scp": "openid smtp.send"})},
		{
			name:  "one of two scopes missing",
			cfg:   func(ic *oidc.IssuerConfig) { ic.RequiredScopes = []string{"smtp.send", "email"} },
			token: tok(map[string]any{"scope": "smtp.send"}), code: oidc.CodeInsufficientScope, scope: "smtp.send email",
		},

		// Client allow-list.
		{name: "azp allowed", cfg: allowClients, token: tok(map[string]any{"azp": "thunderbird"})},
		{name: "client_id allowed", cfg: allowClients, token: tok(map[string]any{"client_id": "k9"})},
		{name: "azp not allowed", cfg: allowClients, token: tok(map[string]any{"azp": "evil"}), code: oidc.CodeInvalidToken, reason: "client not allowed"},
		{name: "azp wins over client_id", cfg: allowClients, token: tok(map[string]any{"azp": "evil", "client_id": "k9"}), code: oidc.CodeInvalidToken, reason: "client not allowed"},
		{name: "no client", cfg: allowClients, token: tok(nil), code: oidc.CodeInvalidToken, reason: "client not allowed"},

		// RFC 9068 typ.
		{name: "typ at+jwt", cfg: requireATJWT, token: withHeader("", map[string]any{"typ": "at+jwt"}, nil)},
		{name: "typ application/at+jwt", cfg: requireATJWT, token: withHeader("", map[string]any{"typ": "application/AT+JWT"}, nil)},
		{name: "typ JWT when at+jwt required", cfg: requireATJWT, token: withHeader("", map[string]any{"typ": "JWT"}, nil), code: oidc.CodeInvalidToken, reason: "token type is not at+jwt"},
		{name: "no typ when at+jwt required", cfg: requireATJWT, token: tok(nil), code: oidc.CodeInvalidToken, reason: "token type is not at+jwt"},
		{name: "typ JWT when not required", token: withHeader("", map[string]any{"typ": "JWT"}, nil)},

		// Signatures.
		{
			name: "tampered payload",
			token: func(t *testing.T, _ time.Time) string {
				return tamper(t, iss.Token(t, nil), map[string]any{"email": "bob@example.com"})
			},
			code: oidc.CodeInvalidToken, reason: "bad signature",
		},
		{
			name: "other key with a known kid",
			token: func(t *testing.T, now time.Time) string {
				return sign(t, jose.RS256, attacker, map[string]any{"kid": "k1"}, claimsFor(iss, now))
			},
			code: oidc.CodeInvalidToken, reason: "bad signature",
		},
		{
			name: "alg none",
			token: func(t *testing.T, now time.Time) string {
				return unsigned(map[string]any{"alg": "none", "kid": "k1"}, claimsFor(iss, now))
			},
			code: oidc.CodeInvalidToken, reason: "signing algorithm not accepted",
		},
		{
			name: "HS256 with the public key as secret",
			token: func(t *testing.T, now time.Time) string {
				return sign(t, jose.HS256, hmacSecret, map[string]any{"kid": "k1"}, claimsFor(iss, now))
			},
			code: oidc.CodeInvalidToken, reason: "signing algorithm not accepted",
		},
		{
			name:  "alg not configured",
			cfg:   func(ic *oidc.IssuerConfig) { ic.Algorithms = []string{"ES256"} },
			token: tok(nil), code: oidc.CodeInvalidToken, reason: "signing algorithm not accepted",
		},
		{
			name:  "kid of a key for another alg",
			token: withHeader(esKID, map[string]any{"kid": "k1"}, nil),
			code:  oidc.CodeInvalidToken, reason: "unknown signing key",
		},

		// Identity claims.
		{name: "no email", token: tok(map[string]any{"email": nil}), code: oidc.CodeInvalidToken, reason: "missing email claim"},
		{name: "empty email", token: tok(map[string]any{"email": ""}), code: oidc.CodeInvalidToken, reason: "missing email claim"},
		{name: "email not a string", token: tok(map[string]any{"email": 42}), code: oidc.CodeInvalidToken, reason: "missing email claim"},
		{name: "email_verified false", token: tok(map[string]any{"email_verified": false}), code: oidc.CodeInvalidToken, reason: "email not verified"},
		{name: "email_verified \"false\"", token: tok(map[string]any{"email_verified": "false"}), code: oidc.CodeInvalidToken, reason: "email not verified"},
		{name: "email_verified true", token: tok(map[string]any{"email_verified": true})},
		{
			name:  "email_verified false with another identity claim",
			cfg:   func(ic *oidc.IssuerConfig) { ic.IdentityClaim = "upn" },
			token: tok(map[string]any{"email_verified": false, "upn": "Alice@Example.com"}),
			want:  &oidc.Identity{Subject: "alice", Address: "alice@example.com", Addresses: []string{"alice@example.com"}},
		},
		{
			name:  "aliases array",
			cfg:   aliases,
			token: tok(map[string]any{"aliases": []string{"ALICE@example.com", "alice.smith@example.com", "Alice.Smith@example.com", ""}}),
			want:  &oidc.Identity{Subject: "alice", Address: "alice@example.com", Addresses: []string{"alice@example.com", "alice.smith@example.com"}},
		},
		{
			name:  "aliases string",
			cfg:   aliases,
			token: tok(map[string]any{"aliases": "postmaster@example.com"}),
			want:  &oidc.Identity{Subject: "alice", Address: "alice@example.com", Addresses: []string{"alice@example.com", "postmaster@example.com"}},
		},
		{name: "aliases malformed", cfg: aliases, token: tok(map[string]any{"aliases": 42}), code: oidc.CodeInvalidToken, reason: "malformed aliases claim"},
		{
			name:  "aliases claim ignored unless configured",
			token: tok(map[string]any{"aliases": []string{"ceo@example.com"}}),
			want:  &oidc.Identity{Subject: "alice", Address: "alice@example.com", Addresses: []string{"alice@example.com"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			v := newVerifier(t, iss, clk, func(c *oidc.Config) {
				if tc.cfg != nil {
					tc.cfg(&c.Issuers[0])
				}
			})
			token := tc.token(t, clk.Now())
			id, err := v.Verify(t.Context(), token)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("Verify() = %v, want success", err)
				}
				if tc.want != nil {
					want := *tc.want
					want.Issuer = iss.URL
					if want.Scopes == nil {
						want.Scopes = id.Scopes
					}
					if want.Expiry.IsZero() {
						want.Expiry = id.Expiry
					}
					if diff := cmp.Diff(&want, id); diff != "" {
						t.Errorf("Verify() identity mismatch (-want +got):\n%s", diff)
					}
				}
				return
			}
			e := wantError(t, err, tc.code, tc.reason)
			if e.Scope != tc.scope {
				t.Errorf("Verify() error Scope = %q, want %q", e.Scope, tc.scope)
			}
			if e.Temporary {
				t.Errorf("Verify() error Temporary = true, want false")
			}
			if strings.Contains(e.Error(), token) {
				t.Errorf("Verify() error %q contains the token", e)
			}
		})
	}
}
