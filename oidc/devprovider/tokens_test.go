package devprovider

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	coreoidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	sgoidc "github.com/smtpgate/smtpgate/oidc"
)

// TestAccessToken checks tokens minted directly against smtpgate's
// verifier, and that extra claims override the standard ones.
func TestAccessToken(t *testing.T) {
	e := newTestEnv(t, nil)
	v := e.gatewayVerifier(t)
	strict, err := sgoidc.New(sgoidc.Config{Issuers: []sgoidc.IssuerConfig{{
		Issuer:         e.issuer,
		Audiences:      []string{"smtp-gateway"},
		AliasesClaim:   "aliases",
		RequireATJWT:   true,
		RequiredScopes: []string{"smtp.send"},
		ClientIDs:      []string{DevClientID},
	}}})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		user      string
		extra     map[string]any
		wantAddrs []string // nil: verification must fail
	}{
		{name: "alice", user: "alice", wantAddrs: []string{"alice@example.com", "postmaster@example.com"}},
		{name: "bob, no aliases", user: "bob", wantAddrs: []string{"bob@example.com"}},
		{name: "extra claim", user: "bob", extra: map[string]any{"tenant": "t1"}, wantAddrs: []string{"bob@example.com"}},
		{name: "extra overrides email", user: "bob", extra: map[string]any{"email": "other@example.com"}, wantAddrs: []string{"other@example.com"}},
		{name: "expired", user: "alice", extra: map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}},
		{name: "wrong audience", user: "alice", extra: map[string]any{"aud": "someone-else"}},
		{name: "email removed", user: "alice", extra: map[string]any{"email": nil}},
		{name: "email not verified", user: "alice", extra: map[string]any{"email_verified": false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := e.p.AccessToken(tc.user, tc.extra)
			if err != nil {
				t.Fatalf("AccessToken(%q): %v", tc.user, err)
			}
			claims := jwtPart(t, tok, 1)
			for k, want := range tc.extra {
				if got := claims[k]; want != nil && got != want && !(isNumber(got) && isNumber(want)) {
					t.Errorf("claim %q = %v, want %v", k, got, want)
				} else if want == nil && got != nil {
					t.Errorf("claim %q = %v, want it removed", k, got)
				}
			}
			for _, verifier := range []*sgoidc.Verifier{v, strict} {
				id, err := verifier.Verify(t.Context(), tok)
				if tc.wantAddrs == nil {
					if err == nil {
						t.Errorf("Verify succeeded, want an error")
					}
					continue
				}
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !slices.Equal(id.Addresses, tc.wantAddrs) || id.ClientID != DevClientID ||
					!slices.Equal(id.Scopes, strings.Fields(DevScope)) {
					t.Errorf("identity = %+v, want addresses %q, client %s, scopes %q", id, tc.wantAddrs, DevClientID, DevScope)
				}
			}
		})
	}

	t.Run("claims", func(t *testing.T) {
		tok, err := e.p.AccessToken("alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		h, c := jwtPart(t, tok, 0), jwtPart(t, tok, 1)
		if h["alg"] != "RS256" || h["typ"] != "at+jwt" || h["kid"] == "" {
			t.Errorf("header = %v", h)
		}
		for _, k := range []string{"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "email", "email_verified", "aliases", "groups"} {
			if _, ok := c[k]; !ok {
				t.Errorf("claim %q missing from %v", k, c)
			}
		}
		if c["iss"] != e.issuer || c["aud"] != "smtp-gateway" || c["sub"] != "u-alice" || c["scope"] != DevScope {
			t.Errorf("claims = %v", c)
		}
		// UserInfo knows minted tokens too.
		op, err := coreoidc.NewProvider(t.Context(), e.issuer)
		if err != nil {
			t.Fatal(err)
		}
		info, err := op.UserInfo(t.Context(), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok}))
		if err != nil || info.Email != "alice@example.com" {
			t.Errorf("UserInfo = %+v, %v", info, err)
		}
	})

	for _, user := range []string{"nobody", ""} {
		if _, err := e.p.AccessToken(user, nil); err == nil {
			t.Errorf("AccessToken(%q) succeeded, want an error", user)
		}
	}
}

func isNumber(v any) bool {
	switch v.(type) {
	case float64, int64, int:
		return true
	}
	return false
}

// TestRevocationAndIntrospection: revoking a refresh token revokes its
// grant (RFC 7009 section 2.1), and introspection (RFC 7662) sees it.
func TestRevocationAndIntrospection(t *testing.T) {
	e := newTestEnv(t, nil)
	ctx := t.Context()
	conf, _ := e.oauth2Config(t, "webapp", "openid", "email", "offline_access", "smtp.send")
	k := newPKCE()
	tok, err := conf.Exchange(ctx, e.authorize(t, conf, k), oauth2.VerifierOption(k.verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}

	introspect := func() map[string]any {
		t.Helper()
		var out map[string]any
		e.postForm(t, "/introspect", url.Values{"token": {tok.AccessToken}}, http.StatusOK, &out)
		return out
	}
	if got := introspect(); got["active"] != true || got["client_id"] != "webapp" || got["sub"] != "u-alice" ||
		got["scope"] != "openid email offline_access smtp.send" || fmt.Sprint(got["aud"]) != "[smtp-gateway]" {
		t.Errorf("introspection before revocation = %v", got)
	}

	e.postForm(t, "/revoke", url.Values{"token": {tok.RefreshToken}, "token_type_hint": {"refresh_token"}}, http.StatusOK, nil)
	if got := introspect(); got["active"] != false {
		t.Errorf("introspection after revocation = %v, want inactive", got)
	}
	_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if c := retrieveErrorCode(err); c != "invalid_grant" {
		t.Errorf("refresh after revocation: err = %v, want invalid_grant", err)
	}
	// Revoking an unknown token is not an error (RFC 7009 section 2.2).
	e.postForm(t, "/revoke", url.Values{"token": {"unknown"}}, http.StatusOK, nil)
}

// postForm posts to an endpoint as the webapp client and decodes the JSON
// answer into out, if not nil.
func (e *testEnv) postForm(t *testing.T, path string, form url.Values, wantStatus int, out any) {
	t.Helper()
	e.post(t, path, "webapp", webappSecret, form, wantStatus, out)
}

// tokenRequest posts to the token endpoint as conf's client.
func (e *testEnv) tokenRequest(t *testing.T, conf *oauth2.Config, form url.Values, wantStatus int, out any) {
	t.Helper()
	e.post(t, "/token", conf.ClientID, conf.ClientSecret, form, wantStatus, out)
}

// post posts a form, authenticated as a confidential client or naming a
// public one, and decodes the JSON answer into out, if not nil.
func (e *testEnv) post(t *testing.T, path, clientID, secret string, form url.Values, wantStatus int, out any) {
	t.Helper()
	if secret == "" {
		form.Set("client_id", clientID)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.issuer+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(clientID, secret)
	}
	resp, err := noRedirects().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != wantStatus {
		t.Fatalf("POST %s = %s, want %d; body: %s", path, resp.Status, wantStatus, body)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(body), out); err != nil {
			t.Fatalf("POST %s: decode %q: %v", path, body, err)
		}
	}
}

// TestEndSession checks RP-initiated logout: the redirect goes to a
// registered URI only, with the state, and the grant ends.
func TestEndSession(t *testing.T) {
	e := newTestEnv(t, nil)
	ctx := t.Context()
	conf, _ := e.oauth2Config(t, "webapp", "openid", "email", "offline_access")
	k := newPKCE()
	tok, err := conf.Exchange(ctx, e.authorize(t, conf, k), oauth2.VerifierOption(k.verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	idToken, _ := tok.Extra("id_token").(string)

	tests := []struct {
		name         string
		postLogout   string
		wantLocation string // "" means an error page
	}{
		{name: "unregistered post_logout_redirect_uri", postLogout: "http://127.0.0.2/elsewhere"},
		{name: "registered post_logout_redirect_uri", postLogout: e.callback, wantLocation: e.callback + "?state=bye"},
		{name: "default page", wantLocation: e.issuer + loggedOutPath + "?state=bye"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{"id_token_hint": {idToken}, "state": {"bye"}}
			if tc.postLogout != "" {
				q.Set("post_logout_redirect_uri", tc.postLogout)
			}
			resp, body := get(t, noRedirects(), e.issuer+"/end_session?"+q.Encode())
			loc := resp.Header.Get("Location")
			if tc.wantLocation == "" {
				if resp.StatusCode != http.StatusBadRequest || loc != "" {
					t.Errorf("end_session = %s, Location %q; want 400 and no redirect; body: %s", resp.Status, loc, body)
				}
				return
			}
			if resp.StatusCode != http.StatusFound || loc != tc.wantLocation {
				t.Errorf("end_session = %s, Location %q; want 302 to %q; body: %s", resp.Status, loc, tc.wantLocation, body)
			}
		})
	}
	_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if c := retrieveErrorCode(err); c != "invalid_grant" {
		t.Errorf("refresh after logout: err = %v, want invalid_grant", err)
	}
	resp, body := get(t, noRedirects(), e.issuer+loggedOutPath)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "signed out") {
		t.Errorf("logged-out page = %s: %s", resp.Status, body)
	}
}
