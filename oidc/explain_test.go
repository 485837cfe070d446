package oidc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

// steps returns "check:ok" or "check:FAIL" for each step, for comparing.
func steps(r *oidc.Report) string {
	var l []string
	for _, s := range r.Steps {
		st := "ok"
		if !s.OK {
			st = "FAIL"
		}
		l = append(l, s.Check+":"+st)
	}
	return strings.Join(l, " ")
}

// TestExplain checks that the token checker reports each check, that it
// reports every failing claim at once, and that its verdict is Verify's.
func TestExplain(t *testing.T) {
	iss := testissuer.New(t)
	clk := newClock()
	v := newVerifier(t, iss, clk, noCache, func(c *oidc.Config) {
		c.Issuers[0].RequiredScopes = []string{"smtp.send"}
		c.Issuers[0].AliasesClaim = "aliases"
	})
	ctx := context.Background()
	tests := []struct {
		name   string
		token  string
		steps  string
		reason string // Verify's reason; "" when accepted
		detail []string
	}{
		{
			name:   "accepted",
			token:  iss.Token(t, map[string]any{"scope": "openid smtp.send", "aliases": []string{"team@example.com"}, "exp": clk.Now().Add(30 * time.Minute)}),
			steps:  "format:ok issuer:ok signature:ok expiry:ok validity:ok audience:ok subject:ok client:ok identity:ok scope:ok",
			detail: []string{`kid "k1"`, "in 30m0s", `may send as alice@example.com, team@example.com`, `required: ["smtp.send"]`},
		},
		{
			name:   "expired, wrong audience and no scope at once",
			token:  iss.Token(t, map[string]any{"aud": "other", "exp": clk.Now().Add(-10 * time.Minute)}),
			steps:  "format:ok issuer:ok signature:ok expiry:FAIL validity:ok audience:FAIL subject:ok client:ok identity:ok scope:FAIL",
			reason: "token expired",
			detail: []string{"10m0s ago", `aud ["other"]; accepted: ["smtp-gateway"]`},
		},
		{
			name:   "unknown issuer",
			token:  iss.Token(t, map[string]any{"iss": "https://evil.example"}),
			steps:  "format:ok issuer:FAIL",
			reason: "unknown issuer",
			detail: []string{`"https://evil.example"`, iss.URL},
		},
		{
			name:   "unknown key",
			token:  iss.Sign(t, "", map[string]any{"kid": "nope"}, nil),
			steps:  "format:ok issuer:ok signature:FAIL",
			reason: "unknown signing key",
			detail: []string{`kid "nope"`},
		},
		{
			name:   "not a JWT",
			token:  "ya29.opaque",
			steps:  "format:FAIL",
			reason: "malformed token",
		},
		{
			name:   "no email",
			token:  iss.Token(t, map[string]any{"email": nil, "scope": "smtp.send"}),
			steps:  "format:ok issuer:ok signature:ok expiry:ok validity:ok audience:ok subject:ok client:ok identity:FAIL scope:ok",
			reason: "missing email claim",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := v.Explain(ctx, tc.token)
			if got := steps(r); got != tc.steps {
				t.Errorf("Explain steps = %s\nwant %s", got, tc.steps)
			}
			_, err := v.Verify(ctx, tc.token)
			if tc.reason == "" {
				if err != nil || !r.Accepted() {
					t.Errorf("Verify = %v, Explain accepted = %v; want both to accept", err, r.Accepted())
				}
			} else {
				wantError(t, err, oidc.CodeInvalidToken, tc.reason)
				if r.Accepted() || r.Err == nil || r.Err.Reason != tc.reason {
					t.Errorf("Explain verdict = %v, want Verify's %q", r.Err, tc.reason)
				}
			}
			out := r.String()
			for _, d := range tc.detail {
				if !strings.Contains(out, d) {
					t.Errorf("report lacks %q:\n%s", d, out)
				}
			}
			if strings.Contains(out, tc.token) {
				t.Errorf("report contains the token:\n%s", out)
			}
		})
	}
}

// TestExplainProviderDown reports a provider that cannot be reached as
// temporary, as the SMTP side answers 454 for it.
func TestExplainProviderDown(t *testing.T) {
	iss := testissuer.New(t)
	v := newVerifier(t, iss, newClock(), noCache)
	iss.SetDown(true)
	r := v.Explain(context.Background(), iss.Token(t, nil))
	if got := steps(r); got != "format:ok issuer:ok signature:FAIL" || r.Err == nil || !r.Err.Temporary {
		t.Fatalf("Explain with the provider down: %s, %v", got, r.Err)
	}
	if !strings.Contains(r.String(), "[temporary") {
		t.Errorf("report does not say the failure is temporary:\n%s", r)
	}
}
