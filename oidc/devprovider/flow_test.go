package devprovider

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	coreoidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/oauth2"

	sgoidc "github.com/smtpgate/smtpgate/oidc"
)

// TestCodeFlow drives the authorization code flow with PKCE end to end,
// as a confidential web app and as a public native app on a loopback
// redirect URI registered without a port, then refreshes.
func TestCodeFlow(t *testing.T) {
	e := newTestEnv(t, nil)
	tests := []struct {
		name     string
		clientID string
	}{
		{name: "confidential client", clientID: "webapp"},
		{name: "public native client, loopback redirect with any port", clientID: "thunderbird"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			conf, op := e.oauth2Config(t, tc.clientID, "openid", "email", "profile", "offline_access", "smtp.send")
			k := newPKCE()

			// The login form comes pre-filled from login_hint.
			browser := newBrowser(t)
			form := openLoginForm(t, browser, k.authURL(conf, oauth2.SetAuthURLParam("login_hint", "alice")))
			if !strings.Contains(form.body, `name="username" value="alice"`) {
				t.Errorf("login form does not pre-fill login_hint:\n%s", form.body)
			}
			resp, body := form.submit(t, browser, "alice", alicePass)
			code := callbackCode(t, e, resp, body, k.state)

			tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(k.verifier))
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if got := tok.Extra("scope"); got != "openid email profile offline_access smtp.send" {
				t.Errorf("token response scope = %q", got)
			}

			// The ID token, checked as a relying party would.
			rawID, _ := tok.Extra("id_token").(string)
			idt, err := op.Verifier(&coreoidc.Config{ClientID: tc.clientID}).Verify(ctx, rawID)
			if err != nil {
				t.Fatalf("ID token Verify: %v", err)
			}
			if idt.Nonce != k.nonce {
				t.Errorf("ID token nonce = %q, want %q", idt.Nonce, k.nonce)
			}
			if !slices.Equal(idt.Audience, []string{tc.clientID}) || idt.Subject != "u-alice" {
				t.Errorf("ID token aud, sub = %q, %q; want [%s], u-alice", idt.Audience, idt.Subject, tc.clientID)
			}
			if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
				t.Errorf("ID token at_hash: %v", err)
			}
			var idClaims struct {
				Email         string   `json:"email"`
				EmailVerified *bool    `json:"email_verified"`
				Name          string   `json:"name"`
				Groups        []string `json:"groups"`
			}
			if err := idt.Claims(&idClaims); err != nil {
				t.Fatal(err)
			}
			if idClaims.Email != "alice@example.com" || idClaims.EmailVerified == nil || !*idClaims.EmailVerified ||
				idClaims.Name != "Alice Liddell" || !slices.Equal(idClaims.Groups, []string{"staff"}) {
				t.Errorf("ID token claims = %+v", idClaims)
			}

			// The access token, checked as the gateway checks it.
			if typ := jwtPart(t, tok.AccessToken, 0)["typ"]; typ != "at+jwt" {
				t.Errorf("access token typ = %v, want at+jwt", typ)
			}
			v := e.gatewayVerifier(t)
			id, err := v.Verify(ctx, tok.AccessToken)
			if err != nil {
				t.Fatalf("gateway Verify(access token): %v", err)
			}
			want := &sgoidc.Identity{
				Issuer:    e.issuer,
				Subject:   "u-alice",
				Address:   "alice@example.com",
				Addresses: []string{"alice@example.com", "postmaster@example.com"},
				Scopes:    []string{"openid", "email", "profile", "offline_access", "smtp.send"},
				ClientID:  tc.clientID,
			}
			if diff := cmp.Diff(want, id, cmpopts.IgnoreFields(sgoidc.Identity{}, "Expiry")); diff != "" {
				t.Errorf("gateway identity (-want +got):\n%s", diff)
			}

			// UserInfo accepts the access token.
			info, err := op.UserInfo(ctx, oauth2.StaticTokenSource(tok))
			if err != nil {
				t.Fatalf("UserInfo: %v", err)
			}
			if info.Email != "alice@example.com" || info.Subject != "u-alice" {
				t.Errorf("UserInfo = %+v", info)
			}

			// Refresh rotates: the new refresh token works, the old one not.
			if tok.RefreshToken == "" {
				t.Fatal("no refresh token despite offline_access")
			}
			tok2, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if tok2.RefreshToken == "" || tok2.RefreshToken == tok.RefreshToken {
				t.Errorf("refresh returned refresh token %q, want a new one", tok2.RefreshToken)
			}
			if _, err := v.Verify(ctx, tok2.AccessToken); err != nil {
				t.Errorf("gateway Verify(refreshed access token): %v", err)
			}
			_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			if code := retrieveErrorCode(err); code != "invalid_grant" {
				t.Errorf("reusing a rotated refresh token: err = %v, want invalid_grant", err)
			}
			// Narrowing the scope on refresh (RFC 6749 section 6) narrows
			// the access token. oauth2 cannot send a scope when refreshing.
			var tok3 struct {
				AccessToken  string `json:"access_token"`
				RefreshToken string `json:"refresh_token"`
				Scope        string `json:"scope"`
			}
			e.tokenRequest(t, conf, url.Values{
				"grant_type": {"refresh_token"}, "refresh_token": {tok2.RefreshToken}, "scope": {"openid email"},
			}, http.StatusOK, &tok3)
			if got := jwtPart(t, tok3.AccessToken, 1)["scope"]; got != "openid email" || tok3.Scope != "openid email" {
				t.Errorf("narrowed access token scope = %v, response scope %q, want \"openid email\"", got, tok3.Scope)
			}
			// The new refresh token keeps the original grant's scope.
			var tok4 struct {
				Scope string `json:"scope"`
			}
			e.tokenRequest(t, conf, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok3.RefreshToken}}, http.StatusOK, &tok4)
			if tok4.Scope != "openid email profile offline_access smtp.send" {
				t.Errorf("scope after refreshing the narrowed token = %q, want the original", tok4.Scope)
			}
			// Widening is refused.
			e.tokenRequest(t, conf, url.Values{
				"grant_type": {"refresh_token"}, "refresh_token": {tok3.RefreshToken}, "scope": {"openid admin"},
			}, http.StatusBadRequest, nil)
		})
	}
}

// TestNoRefreshWithoutOfflineAccess checks that refresh tokens come only
// with offline_access, and ID tokens only with openid.
func TestNoRefreshWithoutOfflineAccess(t *testing.T) {
	e := newTestEnv(t, nil)
	conf, _ := e.oauth2Config(t, "webapp", "email", "smtp.send")
	k := newPKCE()
	tok, err := conf.Exchange(t.Context(), e.authorize(t, conf, k), oauth2.VerifierOption(k.verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if tok.RefreshToken != "" || tok.Extra("id_token") != nil {
		t.Errorf("refresh token %q, id_token %v; want neither", tok.RefreshToken, tok.Extra("id_token"))
	}
	if _, err := e.gatewayVerifier(t).Verify(t.Context(), tok.AccessToken); err != nil {
		t.Errorf("gateway Verify: %v", err)
	}
}

// TestWrongPassword checks that bad credentials show the form again with
// an error, without redirecting, and that the form still works after.
func TestWrongPassword(t *testing.T) {
	e := newTestEnv(t, nil)
	conf, _ := e.oauth2Config(t, "webapp", "openid", "email")
	k := newPKCE()
	browser := newBrowser(t)
	form := openLoginForm(t, browser, k.authURL(conf))

	for _, c := range []struct{ user, pass string }{{"alice", "wrong"}, {"nobody", alicePass}, {"alice", ""}} {
		resp, body := form.submit(t, browser, c.user, c.pass)
		if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != loginPath || len(resp.Request.URL.Query()) != 0 {
			t.Errorf("login(%q, %q) ended at %s with %s, want the form again", c.user, c.pass, resp.Request.URL, resp.Status)
		}
		if !strings.Contains(body, `role="alert">Invalid username or password.</p>`) {
			t.Errorf("login(%q, %q) page has no error:\n%s", c.user, c.pass, body)
		}
		if !strings.Contains(body, `name="authRequestID" value="`+form.id+`"`) {
			t.Errorf("login(%q, %q) page lost the auth request", c.user, c.pass)
		}
	}
	if n := e.hits.Load(); n != 0 {
		t.Errorf("client app got %d requests after failed logins, want 0", n)
	}
	resp, body := form.submit(t, browser, "alice", alicePass)
	callbackCode(t, e, resp, body, k.state)
}

// TestLoginPage checks the form's markup, its headers, and its defences.
func TestLoginPage(t *testing.T) {
	e := newTestEnv(t, nil)
	conf, _ := e.oauth2Config(t, "webapp", "openid")
	browser := newBrowser(t)
	form := openLoginForm(t, browser, newPKCE().authURL(conf))
	for _, s := range []string{
		`<label for="username">Username</label>`,
		`id="username" name="username"`,
		`<label for="password">Password</label>`,
		`type="password" id="password" name="password"`,
		`<html lang="en">`,
		`to continue to <strong>webapp</strong>`,
	} {
		if !strings.Contains(form.body, s) {
			t.Errorf("login page lacks %q", s)
		}
	}
	if strings.Contains(form.body, "http") && strings.Contains(form.body, "<link") {
		t.Errorf("login page loads external assets")
	}

	tests := []struct {
		name   string
		id     string
		header http.Header
		want   int
	}{
		{name: "cross-origin post", id: form.id, header: http.Header{"Sec-Fetch-Site": {"cross-site"}}, want: http.StatusForbidden},
		{name: "unknown auth request", id: "bogus", want: http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, form.action, strings.NewReader(url.Values{
				"authRequestID": {tc.id}, "username": {"alice"}, "password": {alicePass},
			}.Encode()))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := noRedirects().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			if resp.StatusCode != tc.want || resp.Header.Get("Location") != "" {
				t.Errorf("POST login = %s, Location %q; want %d, no Location", resp.Status, resp.Header.Get("Location"), tc.want)
			}
		})
	}

	resp, _ := get(t, noRedirects(), form.action+"?authRequestID="+url.QueryEscape(form.id))
	for h, want := range map[string]string{
		"Content-Type":  "text/html; charset=utf-8",
		"Cache-Control": "no-store",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("login page %s = %q, want %q", h, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("login page CSP = %q", csp)
	}
}

// TestPKCE checks that PKCE is enforced at both ends.
func TestPKCE(t *testing.T) {
	e := newTestEnv(t, nil)

	t.Run("verifier mismatch fails the exchange and burns the code", func(t *testing.T) {
		conf, _ := e.oauth2Config(t, "webapp", "openid", "email")
		k := newPKCE()
		code := e.authorize(t, conf, k)
		_, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
		if c := retrieveErrorCode(err); c != "invalid_grant" {
			t.Errorf("Exchange(wrong verifier): err = %v, want invalid_grant", err)
		}
		_, err = conf.Exchange(t.Context(), code, oauth2.VerifierOption(k.verifier))
		if c := retrieveErrorCode(err); c != "invalid_grant" {
			t.Errorf("Exchange(right verifier, after a failure): err = %v, want invalid_grant", err)
		}
	})

	t.Run("verifier missing fails the exchange of a confidential client", func(t *testing.T) {
		conf, _ := e.oauth2Config(t, "webapp", "openid", "email")
		k := newPKCE()
		_, err := conf.Exchange(t.Context(), e.authorize(t, conf, k))
		if c := retrieveErrorCode(err); c != "invalid_request" {
			t.Errorf("Exchange(no verifier): err = %v, want invalid_request", err)
		}
	})

	t.Run("code is single-use", func(t *testing.T) {
		conf, _ := e.oauth2Config(t, "thunderbird", "openid", "email")
		k := newPKCE()
		code := e.authorize(t, conf, k)
		if _, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(k.verifier)); err != nil {
			t.Fatalf("Exchange: %v", err)
		}
		_, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(k.verifier))
		if c := retrieveErrorCode(err); c != "invalid_grant" {
			t.Errorf("second Exchange: err = %v, want invalid_grant", err)
		}
	})

	t.Run("confidential client without PKCE", func(t *testing.T) {
		conf, _ := e.oauth2Config(t, "webapp", "openid", "email")
		k := newPKCE()
		browser := newBrowser(t)
		form := openLoginForm(t, browser, conf.AuthCodeURL(k.state))
		resp, body := form.submit(t, browser, "alice", alicePass)
		if _, err := conf.Exchange(t.Context(), callbackCode(t, e, resp, body, k.state)); err != nil {
			t.Errorf("Exchange: %v", err)
		}
	})

	// Refusals at /authorize go back to the registered redirect URI, with
	// the state, as RFC 6749 section 4.1.2.1 says.
	refusals := []struct {
		name     string
		clientID string
		opts     []oauth2.AuthCodeOption
	}{
		{name: "public client without code_challenge", clientID: "thunderbird"},
		{
			name: "plain code_challenge_method", clientID: "webapp",
			opts: []oauth2.AuthCodeOption{
				oauth2.SetAuthURLParam("code_challenge", oauth2.GenerateVerifier()),
				oauth2.SetAuthURLParam("code_challenge_method", "plain"),
			},
		},
		{
			name: "code_challenge without method (plain by default)", clientID: "thunderbird",
			opts: []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("code_challenge", oauth2.GenerateVerifier())},
		},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			conf, _ := e.oauth2Config(t, tc.clientID, "openid")
			state := "st-" + tc.clientID
			resp, body := get(t, newBrowser(t), conf.AuthCodeURL(state, tc.opts...))
			q := resp.Request.URL.Query()
			if body != "callback ok" || q.Get("error") != "invalid_request" || q.Get("state") != state || q.Has("code") {
				t.Errorf("authorize ended at %s (%s), want the callback with error=invalid_request and the state", resp.Request.URL, resp.Status)
			}
		})
	}
}

// TestAuthorizeRefused checks that an unknown client or an unregistered
// redirect URI gets an error page and never a redirect.
func TestAuthorizeRefused(t *testing.T) {
	e := newTestEnv(t, nil)
	cb, err := url.Parse(e.callback)
	if err != nil {
		t.Fatal(err)
	}
	port := cb.Port()
	tests := []struct {
		name, clientID, redirectURI string
	}{
		{name: "unknown client", clientID: "nope", redirectURI: e.callback},
		{name: "unregistered host", clientID: "webapp", redirectURI: "http://127.0.0.2:" + port + "/callback"},
		{name: "registered URI with another port", clientID: "webapp", redirectURI: "http://127.0.0.1:1/callback"},
		{name: "registered URI with another path", clientID: "webapp", redirectURI: "http://127.0.0.1:" + port + "/callback/x"},
		{name: "registered URI with a query added", clientID: "webapp", redirectURI: e.callback + "?next=/"},
		{name: "loopback: localhost for 127.0.0.1", clientID: "thunderbird", redirectURI: "http://localhost:" + port + "/callback"},
		{name: "loopback: another path", clientID: "thunderbird", redirectURI: "http://127.0.0.1:" + port + "/other"},
		{name: "loopback: https", clientID: "thunderbird", redirectURI: "https://127.0.0.1:" + port + "/callback"},
		{name: "loopback: userinfo", clientID: "thunderbird", redirectURI: "http://127.0.0.1:" + port + "@127.0.0.2/callback"},
		{name: "no redirect URI", clientID: "webapp", redirectURI: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{
				"client_id": {tc.clientID}, "response_type": {"code"}, "scope": {"openid"}, "state": {"s"},
				"code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"},
			}
			if tc.redirectURI != "" {
				q.Set("redirect_uri", tc.redirectURI)
			}
			resp, body := get(t, noRedirects(), e.issuer+"/authorize?"+q.Encode())
			if resp.StatusCode < 400 || resp.StatusCode >= 500 || resp.Header.Get("Location") != "" {
				t.Errorf("authorize = %s, Location %q, want a 4xx error page; body: %s", resp.Status, resp.Header.Get("Location"), body)
			}
		})
	}
	if n := e.hits.Load(); n != 0 {
		t.Errorf("client app got %d requests, want 0", n)
	}
}

// TestDisabledUser checks that a disabled account can neither log in nor
// refresh nor use UserInfo, and that re-enabling it restores all that.
func TestDisabledUser(t *testing.T) {
	e := newTestEnv(t, nil)
	ctx := t.Context()
	conf, op := e.oauth2Config(t, "webapp", "openid", "email", "offline_access")
	k := newPKCE()
	tok, err := conf.Exchange(ctx, e.authorize(t, conf, k), oauth2.VerifierOption(k.verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}

	e.p.SetUserDisabled("alice", true)
	browser := newBrowser(t)
	form := openLoginForm(t, browser, newPKCE().authURL(conf))
	resp, body := form.submit(t, browser, "alice", alicePass)
	if resp.Request.URL.Path != loginPath || !strings.Contains(body, "This account is disabled.") {
		t.Errorf("login of a disabled user ended at %s; body:\n%s", resp.Request.URL, body)
	}
	_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if c := retrieveErrorCode(err); c != "invalid_grant" {
		t.Errorf("refresh of a disabled user: err = %v, want invalid_grant", err)
	}
	if _, err := op.UserInfo(ctx, oauth2.StaticTokenSource(tok)); err == nil {
		t.Error("UserInfo for a disabled user succeeded")
	}
	if _, err := e.p.AccessToken("alice", nil); err == nil {
		t.Error("AccessToken for a disabled user succeeded")
	}
	if n := e.hits.Load(); n != 1 {
		t.Errorf("client app got %d requests, want 1 (the first login)", n)
	}

	e.p.SetUserDisabled("alice", false)
	if _, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err != nil {
		t.Errorf("refresh after re-enabling: %v", err)
	}
	e.p.SetUserDisabled("nobody", true) // logged and ignored
}

// TestDisabledBetweenLoginAndExchange checks the code exchange too.
func TestDisabledBetweenLoginAndExchange(t *testing.T) {
	e := newTestEnv(t, nil)
	conf, _ := e.oauth2Config(t, "webapp", "openid")
	k := newPKCE()
	code := e.authorize(t, conf, k)
	e.p.SetUserDisabled("alice", true)
	_, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(k.verifier))
	if c := retrieveErrorCode(err); c != "invalid_grant" {
		t.Errorf("Exchange for a user disabled after login: err = %v, want invalid_grant", err)
	}
}

// TestLoopbackRedirectURIs checks RFC 8252 section 7.3 for clients that
// register bare loopback URIs, as Thunderbird does: any port is accepted,
// with an empty path or "/", on the registered host only.
func TestLoopbackRedirectURIs(t *testing.T) {
	e := newTestEnv(t, func(c *Config) {
		c.Clients = append(c.Clients, Client{
			ID:           "native",
			RedirectURIs: []string{"http://localhost", "http://127.0.0.1", "http://[::1]", "com.example.app:/oauth"},
		})
	})
	tests := []struct {
		redirectURI string
		ok          bool
	}{
		{"http://localhost", true},
		{"http://localhost:5555", true},
		{"http://localhost:5555/", true},
		{"http://127.0.0.1:40000", true},
		{"http://[::1]:40000/", true},
		{"com.example.app:/oauth", true},
		{"http://localhost:5555/x", false},
		{"http://localhost:5555/?a=b", false},
		{"https://localhost:5555", false},
		{"http://127.0.0.2:5555", false},
		{"http://localhost.example:5555", false},
		{"com.example.app:/other", false},
	}
	for _, tc := range tests {
		q := url.Values{
			"client_id": {"native"}, "response_type": {"code"}, "scope": {"openid"}, "state": {"s"},
			"redirect_uri":   {tc.redirectURI},
			"code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"},
		}
		resp, body := get(t, noRedirects(), e.issuer+"/authorize?"+q.Encode())
		loc := resp.Header.Get("Location")
		if tc.ok && (resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, e.issuer+loginPath+"?")) {
			t.Errorf("authorize(redirect_uri=%q) = %s, Location %q; want a redirect to the login form; body: %s", tc.redirectURI, resp.Status, loc, body)
		}
		if !tc.ok && (resp.StatusCode != http.StatusBadRequest || loc != "") {
			t.Errorf("authorize(redirect_uri=%q) = %s, Location %q; want 400 and no redirect", tc.redirectURI, resp.Status, loc)
		}
	}
}

// TestConcurrentRedemption checks that a code, and a refresh token, used
// twice at once work once.
func TestConcurrentRedemption(t *testing.T) {
	e := newTestEnv(t, nil)
	conf, _ := e.oauth2Config(t, "webapp", "openid", "offline_access")
	k := newPKCE()
	code := e.authorize(t, conf, k)

	race := func(name string, redeem func() (*oauth2.Token, error)) *oauth2.Token {
		t.Helper()
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			toks  = make([]*oauth2.Token, 4)
			errs  = make([]error, len(toks))
		)
		for i := range toks {
			wg.Go(func() {
				<-start
				toks[i], errs[i] = redeem()
			})
		}
		close(start)
		wg.Wait()
		var won *oauth2.Token
		for i, err := range errs {
			switch {
			case err == nil && won != nil:
				t.Errorf("%s: more than one concurrent use succeeded", name)
			case err == nil:
				won = toks[i]
			case retrieveErrorCode(err) != "invalid_grant":
				t.Errorf("%s: err = %v, want invalid_grant", name, err)
			}
		}
		if won == nil {
			t.Fatalf("%s: no concurrent use succeeded: %v", name, errs)
		}
		return won
	}
	tok := race("code", func() (*oauth2.Token, error) {
		return conf.Exchange(t.Context(), code, oauth2.VerifierOption(k.verifier))
	})
	race("refresh token", func() (*oauth2.Token, error) {
		return conf.TokenSource(t.Context(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	})
}
