package oidc_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/oidc"
)

func TestValidate(t *testing.T) {
	good := func() oidc.Config {
		return oidc.Config{Issuers: []oidc.IssuerConfig{{Issuer: "https://login.example.com", Audiences: []string{"smtp-gateway"}}}}
	}
	issuer := func(f func(*oidc.IssuerConfig)) oidc.Config {
		c := good()
		f(&c.Issuers[0])
		return c
	}
	tests := []struct {
		name string
		cfg  oidc.Config
		want []string // substrings of the error, one per problem; none for valid
	}{
		{name: "valid", cfg: good()},
		{name: "valid loopback http", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.Issuer = "http://127.0.0.1:5556/dex" })},
		{name: "valid all algorithms", cfg: issuer(func(ic *oidc.IssuerConfig) {
			ic.Algorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
		})},
		{name: "no issuers", cfg: oidc.Config{}, want: []string{"no issuers"}},
		{name: "empty issuer", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.Issuer = "" }), want: []string{"issuers[0]: empty issuer"}},
		{name: "issuer not a URL", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.Issuer = "login.example.com" }), want: []string{"not an absolute URL"}},
		{name: "issuer over http", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.Issuer = "http://login.example.com" }), want: []string{"loopback hosts only"}},
		{name: "issuer with query", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.Issuer = "https://login.example.com/?tenant=x" }), want: []string{"no query or fragment"}},
		{name: "bad discovery URL", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.DiscoveryURL = "ftp://x/y" }), want: []string{"discovery url"}},
		{name: "no audiences", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.Audiences = nil }), want: []string{"no audiences"}},
		{name: "empty audience", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.Audiences = []string{""} }), want: []string{"empty audience"}},
		{name: "alg none", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.Algorithms = []string{"none"} }), want: []string{`"none" is never accepted`}},
		{name: "alg HS256", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.Algorithms = []string{"RS256", "HS256"} }), want: []string{`"HS256": HMAC`}},
		{name: "alg unknown", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.Algorithms = []string{"ES256K"} }), want: []string{`unsupported signing algorithm "ES256K"`}},
		{name: "scope with space", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.RequiredScopes = []string{"a b"} }), want: []string{"required scope"}},
		{name: "empty client id", cfg: issuer(func(ic *oidc.IssuerConfig) { ic.ClientIDs = []string{""} }), want: []string{"empty client id"}},
		{name: "negative durations", cfg: func() oidc.Config {
			c := good()
			c.Leeway, c.MinKeyRefresh, c.KeyMaxAge = -time.Second, -time.Second, -time.Second
			return c
		}(), want: []string{"negative leeway", "negative min key refresh", "negative key max age"}},
		{name: "duplicate issuer", cfg: func() oidc.Config {
			c := good()
			c.Issuers = append(c.Issuers, c.Issuers[0])
			return c
		}(), want: []string{`issuers[1]: duplicate issuer "https://login.example.com" (also issuers[0])`}},
		{name: "every problem at once", cfg: oidc.Config{
			Issuers: []oidc.IssuerConfig{
				{Issuer: "", Algorithms: []string{"none"}},
				{Issuer: "not a url", Audiences: []string{"a"}, Algorithms: []string{"HS512"}},
			},
			Leeway: -1,
		}, want: []string{"issuers[0]: empty issuer", "issuers[0]: no audiences", "issuers[0]: signing algorithm \"none\"", "issuers[1]: issuer", "issuers[1]: signing algorithm \"HS512\"", "negative leeway"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tc.want)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Validate() = %q, want it to contain %q", msg, w)
				}
			}
			if got := strings.Count(msg, "\n") + 1; got != len(tc.want) {
				t.Errorf("Validate() lists %d problems, want %d:\n%s", got, len(tc.want), msg)
			}
			if _, nerr := oidc.New(tc.cfg); nerr == nil || nerr.Error() != msg {
				t.Errorf("New() = %v, want the Validate error", nerr)
			}
		})
	}
}

func TestErrorUnwrap(t *testing.T) {
	cause := errors.New("jwks: 503 Service Unavailable")
	var err error = &oidc.Error{Code: oidc.CodeInvalidToken, Temporary: true, Reason: "signing keys unavailable", Err: cause}
	if !errors.Is(err, cause) {
		t.Errorf("errors.Is(%v, cause) = false, want true", err)
	}
	if got, want := err.Error(), "oidc: invalid_token: signing keys unavailable: jwks: 503 Service Unavailable"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
