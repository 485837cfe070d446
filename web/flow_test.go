package web

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/mailaddr"
	"github.com/smtpgate/smtpgate/oidc/devprovider"
	"github.com/smtpgate/smtpgate/store"
)

// A flowEnv is the web app on a loopback listener, signing people in at a
// real devprovider over HTTP.
type flowEnv struct {
	app    *app
	web    string // base URL
	idp    string // issuer
	st     *store.Store
	logout chan string // end_session requests seen at the provider
	// hang, while set, makes the provider's token endpoint wait until it
	// is closed: a provider that hangs.
	mu   sync.Mutex
	hang chan struct{}
}

func newFlowEnv(t *testing.T, pcfg func(*devprovider.Config), wcfg func(*Config)) *flowEnv {
	t.Helper()
	webSrv := httptest.NewUnstartedServer(nil)
	idpSrv := httptest.NewUnstartedServer(nil)
	e := &flowEnv{web: "http://" + webSrv.Listener.Addr().String(), idp: "http://" + idpSrv.Listener.Addr().String(), logout: make(chan string, 10)}
	pc := devprovider.Config{
		Issuer: e.idp,
		Users:  []devprovider.User{{Subject: "u-alice", Username: "alice", Password: "pw", Email: "alice@example.com", EmailVerified: true}},
		Clients: []devprovider.Client{{ID: "web", Secret: "s", RedirectURIs: []string{e.web + "/auth/callback"},
			PostLogoutRedirectURIs: []string{e.web + "/"}}},
		AllowInsecure: true,
		SSO:           true,
	}
	if pcfg != nil {
		pcfg(&pc)
	}
	p, err := devprovider.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	ph := p.Handler()
	idpSrv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/end_session":
			e.logout <- r.URL.RawQuery
		case "/token":
			e.mu.Lock()
			h := e.hang
			e.mu.Unlock()
			if h != nil {
				select {
				case <-h:
				case <-time.After(10 * time.Second):
				}
			}
		}
		ph.ServeHTTP(w, r)
	})
	idpSrv.Start()
	t.Cleanup(idpSrv.Close)

	key := make([]byte, 32)
	rand.Read(key)
	e.st, err = store.Open(context.Background(), "sqlite", filepath.Join(t.TempDir(), "db"), store.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.st.Close() })
	cfg := Config{BaseURL: e.web, Issuer: e.idp, ClientID: "web", ClientSecret: "s", Store: e.st, Key: key,
		SMTPHost: "mail.example.com", HTTPClient: &http.Client{Timeout: 2 * time.Second}}
	if wcfg != nil {
		wcfg(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	webSrv.Config = NewServer(h, ServerLimits{}, nil)
	webSrv.Start()
	t.Cleanup(webSrv.Close)
	return e
}

// A tab is a browser: a cookie jar, redirects followed.
type tab struct {
	t *testing.T
	c *http.Client
}

func (e *flowEnv) newTab(t *testing.T) *tab {
	jar, _ := cookiejar.New(nil)
	return &tab{t, &http.Client{Jar: jar, Timeout: 15 * time.Second}}
}

// get fetches u, following redirects; it returns the final URL, status
// and body.
func (b *tab) get(u string) (string, int, string) {
	b.t.Helper()
	resp, err := b.c.Get(u)
	if err != nil {
		b.t.Fatalf("GET %s: %v", u, err)
	}
	return page3(b.t, resp)
}

func (b *tab) post(u string, form url.Values) (string, int, string) {
	b.t.Helper()
	resp, err := b.c.PostForm(u, form)
	if err != nil {
		b.t.Fatalf("POST %s: %v", u, err)
	}
	return page3(b.t, resp)
}

func page3(t *testing.T, resp *http.Response) (string, int, string) {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Request.URL.String(), resp.StatusCode, string(b)
}

var authRequestField = regexp.MustCompile(`name="authRequestID" value="([^"]+)"`)

// signIn goes through /login and, if the provider shows its form, types
// the password; it returns the final page.
func (b *tab) signIn(e *flowEnv, path string) (string, int, string) {
	b.t.Helper()
	u, code, body := b.get(e.web + path)
	if m := authRequestField.FindStringSubmatch(body); m != nil {
		return b.post(e.idp+"/login", url.Values{"authRequestID": {m[1]}, "username": {"alice"}, "password": {"pw"}})
	}
	return u, code, body
}

// consent posts the new-token form and returns the consent page's nonce.
func (b *tab) consent(e *flowEnv) (url.Values, string) {
	b.t.Helper()
	form := url.Values{"label": {"phone"}, "days": {"90"}, "sender": {"alice@example.com"}}
	_, code, body := b.post(e.web+"/tokens/new", form)
	if code != http.StatusOK || !nonceField.MatchString(body) {
		return form, body
	}
	form.Set("nonce", nonceOf(b.t, body))
	return form, body
}

func (e *flowEnv) tokens(t *testing.T) int {
	t.Helper()
	l, err := e.st.ListOwned(context.Background(), mailaddr.MustParse("alice@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	return len(l)
}

// waitStale sleeps until a sign-in made at signedIn is older than the
// reauth age of the test (2s), auth_time being whole seconds.
func waitStale(signedIn time.Time) {
	time.Sleep(time.Until(signedIn.Truncate(time.Second).Add(3 * time.Second)))
}

// TestReauthHonoured: a stale auth_time cannot mint a token, even with a
// consent nonce got while it was fresh; the sign-in-again link asks the
// provider for max_age and prompt=login, and the provider, which has a
// live SSO session, shows its password form again; after that a token
// can be made.
func TestReauthHonoured(t *testing.T) {
	t.Parallel()
	e := newFlowEnv(t, nil, func(c *Config) { c.ReauthAge = 2 * time.Second })
	b := e.newTab(t)
	signedIn := time.Now()
	if u, code, _ := b.signIn(e, "/login"); code != 200 || u != e.web+"/tokens" {
		t.Fatalf("sign-in ended at %s (%d)", u, code)
	}
	form, _ := b.consent(e)
	waitStale(signedIn)
	_, code, body := b.post(e.web+"/tokens/confirm", form)
	if !strings.Contains(body, "/login?reauth=1") || e.tokens(t) != 0 {
		t.Fatalf("confirm with a stale auth_time = %d, %d tokens; want the sign-in-again page and none", code, e.tokens(t))
	}

	// The reauth redirect carries max_age and prompt=login.
	nr := &http.Client{Jar: b.c.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := nr.Get(e.web + "/login?reauth=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if q := loc.Query(); q.Get("max_age") != "2" || q.Get("prompt") != "login" || q.Get("login_hint") != "alice@example.com" {
		t.Errorf("reauth redirect = %s, want max_age=2, prompt=login and the login hint", loc)
	}
	// The SSO session alone does not answer: the form is shown.
	_, _, body = b.get(e.web + "/login?reauth=1")
	if !authRequestField.MatchString(body) {
		t.Fatalf("the provider did not ask for the password again:\n%s", body)
	}
	if _, code, _ := b.signIn(e, "/login?reauth=1"); code != 200 {
		t.Fatalf("sign-in again = %d", code)
	}
	form, _ = b.consent(e)
	if _, code, body := b.post(e.web+"/tokens/confirm", form); code != 200 || !strings.Contains(body, "shown only this once") || e.tokens(t) != 1 {
		t.Errorf("confirm after signing in again = %d, %d tokens; want the token", code, e.tokens(t))
	}
}

// TestReauthIgnored: a provider that answers max_age and prompt=login
// from its SSO session, with the old auth_time, is refused.
func TestReauthIgnored(t *testing.T) {
	t.Parallel()
	e := newFlowEnv(t, func(c *devprovider.Config) { c.IgnoreReauth = true }, func(c *Config) { c.ReauthAge = 2 * time.Second })
	b := e.newTab(t)
	signedIn := time.Now()
	b.signIn(e, "/login")
	waitStale(signedIn)
	u, code, body := b.get(e.web + "/login?reauth=1")
	if code != http.StatusForbidden || !strings.Contains(body, "did not ask for your password again") {
		t.Fatalf("reauth against a provider ignoring max_age ended at %s = %d:\n%s", u, code, body)
	}
	form, _ := b.consent(e)
	b.post(e.web+"/tokens/confirm", form)
	if n := e.tokens(t); n != 0 {
		t.Errorf("%d tokens minted without a fresh sign-in", n)
	}
}

// TestSignOut: sign-out deletes the session record, so the copied cookie
// opens nothing; the provider's session is ended at its
// end_session_endpoint, so the next sign-in asks for the password.
func TestSignOut(t *testing.T) {
	t.Parallel()
	e := newFlowEnv(t, nil, nil)
	b := e.newTab(t)
	b.signIn(e, "/login")
	webURL, _ := url.Parse(e.web)
	copied := b.c.Jar.Cookies(webURL)
	form, _ := b.consent(e)

	u, code, _ := b.post(e.web+"/logout", nil)
	if code != 200 || u != e.web+"/" {
		t.Errorf("sign-out ended at %s (%d), want the start page via the provider", u, code)
	}
	select {
	case q := <-e.logout:
		v, _ := url.ParseQuery(q)
		if v.Get("id_token_hint") == "" || v.Get("post_logout_redirect_uri") != e.web+"/" || v.Get("client_id") != "web" {
			t.Errorf("end_session request = %s, want id_token_hint, client_id and post_logout_redirect_uri", q)
		}
	default:
		t.Error("sign-out did not go to the provider's end_session_endpoint")
	}

	// The cookie replayed: the sign-in page, and no token.
	thief := e.newTab(t)
	thief.c.Jar.SetCookies(webURL, copied)
	if u, _, body := thief.get(e.web + "/tokens"); u != e.web+"/" || strings.Contains(body, "Signed in as") {
		t.Errorf("replayed cookie: /tokens ended at %s, want the start page", u)
	}
	if _, code, _ := thief.post(e.web+"/tokens/confirm", form); code != http.StatusUnauthorized || e.tokens(t) != 0 {
		t.Errorf("replayed cookie: confirm = %d, %d tokens; want 401 and none", code, e.tokens(t))
	}
	// The provider forgot the browser: signing in asks again.
	if _, _, body := b.get(e.web + "/login"); !authRequestField.MatchString(body) {
		t.Error("after sign-out the provider signed the browser in silently")
	}
}

// TestSignOutEverywhere ends the sessions of every browser; several
// sign-ins in one browser's tabs do not cancel each other.
func TestSignOutEverywhere(t *testing.T) {
	t.Parallel()
	e := newFlowEnv(t, nil, nil)
	laptop, phone := e.newTab(t), e.newTab(t)
	laptop.signIn(e, "/login")

	// Two tabs of the phone start signing in; both complete.
	nr := &http.Client{Jar: phone.c.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var auth []string
	for range 2 {
		resp, err := nr.Get(e.web + "/login")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		auth = append(auth, resp.Header.Get("Location"))
	}
	for i, a := range auth {
		u, code, body := phone.get(a)
		m := authRequestField.FindStringSubmatch(body)
		if m == nil {
			// the SSO session of the first tab answers the second
			if code != 200 || u != e.web+"/tokens" {
				t.Fatalf("tab %d: sign-in ended at %s (%d)", i, u, code)
			}
			continue
		}
		if u, code, _ := phone.post(e.idp+"/login", url.Values{"authRequestID": {m[1]}, "username": {"alice"}, "password": {"pw"}}); code != 200 || u != e.web+"/tokens" {
			t.Fatalf("tab %d: sign-in ended at %s (%d), want /tokens", i, u, code)
		}
	}
	if _, _, body := phone.get(e.web + "/tokens"); !strings.Contains(body, "Signed in as") {
		t.Fatal("phone not signed in")
	}
	if _, _, body := laptop.get(e.web + "/logout"); !strings.Contains(body, "Sign out everywhere") {
		t.Error("the sign-out page offers no sign out everywhere")
	}
	laptop.post(e.web+"/logout/everywhere", nil)
	if _, _, body := phone.get(e.web + "/tokens"); strings.Contains(body, "Signed in as") {
		t.Error("the phone is still signed in after sign out everywhere")
	}
}

// TestRequiredACR: with web.required_acr, acr_values is asked for and an
// ID token without that acr is refused.
func TestRequiredACR(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		acr  string
		want int
	}{{"", http.StatusForbidden}, {"pwd", http.StatusForbidden}, {"mfa", http.StatusOK}} {
		e := newFlowEnv(t, func(c *devprovider.Config) { c.ACR = tc.acr }, func(c *Config) { c.RequiredACR = "mfa" })
		b := e.newTab(t)
		nr := &http.Client{Jar: b.c.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := nr.Get(e.web + "/login")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc, _ := url.Parse(resp.Header.Get("Location")); loc.Query().Get("acr_values") != "mfa" {
			t.Errorf("authorization request %s lacks acr_values=mfa", loc)
		}
		if _, code, body := b.signIn(e, "/login"); code != tc.want {
			t.Errorf("acr %q: sign-in = %d, want %d:\n%s", tc.acr, code, tc.want, body)
		}
	}
}

// TestCallbackProviderError: after the state matched, a provider error is
// shown as a fixed text, never the attacker-writable description.
func TestCallbackProviderError(t *testing.T) {
	t.Parallel()
	e := newFlowEnv(t, nil, nil)
	b := e.newTab(t)
	nr := &http.Client{Jar: b.c.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ code, want string }{
		{"access_denied", "The sign-in was cancelled or refused."},
		{"made_up<b>", "The sign-in service refused the sign-in."},
	} {
		resp, err := nr.Get(e.web + "/login")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		state := loc.Query().Get("state")
		_, code, body := b.get(e.web + "/auth/callback?" + url.Values{"state": {state}, "error": {tc.code},
			"error_description": {"Your account is locked, call +1-555-EVIL"}}.Encode())
		if code != http.StatusForbidden || !strings.Contains(body, tc.want) || strings.Contains(body, "EVIL") || strings.Contains(body, "made_up") {
			t.Errorf("error=%s: %d, want 403 with %q only:\n%s", tc.code, code, tc.want, body)
		}
	}
}

// TestHungProvider: a token endpoint that never answers costs one
// sign-in the client timeout and does not block another person's /login.
func TestHungProvider(t *testing.T) {
	t.Parallel()
	e := newFlowEnv(t, nil, nil)
	b := e.newTab(t)
	b.get(e.web + "/") // discovery happens at the first /login below
	hang := make(chan struct{})
	defer close(hang)
	e.mu.Lock()
	e.hang = hang
	e.mu.Unlock()
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		_, code, _ := b.signIn(e, "/login")
		if code != http.StatusBadGateway {
			t.Errorf("sign-in with a hung token endpoint = %d, want 502", code)
		}
		done <- time.Since(start)
	}()
	time.Sleep(300 * time.Millisecond) // the first sign-in is now waiting for /token
	other := e.newTab(t)
	start := time.Now()
	if _, _, body := other.get(e.web + "/login"); !authRequestField.MatchString(body) {
		t.Error("a second /login did not reach the provider's form")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a second /login took %v while the provider hung on another", d)
	}
	select {
	case d := <-done:
		t.Logf("the hung sign-in failed after %v (client timeout 2s)", d)
		if d > 5*time.Second {
			t.Errorf("the hung sign-in took %v, want about the 2s client timeout", d)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("the hung sign-in did not end within 8s")
	}
}

// TestServerLimits: an idle keep-alive connection and a POST whose body
// never comes are closed within the configured timeouts.
func TestServerLimits(t *testing.T) {
	t.Parallel()
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, "too big", http.StatusRequestEntityTooLarge)
			return
		}
		w.Write([]byte("ok"))
	}), ServerLimits{ReadTimeout: 500 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, ReadHeaderTimeout: 200 * time.Millisecond, MaxBodyBytes: 1000}, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	closedAfter := func(c net.Conn) time.Duration {
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				return time.Since(start)
			}
		}
	}
	for _, tc := range []struct {
		name  string
		send  string
		limit time.Duration
	}{
		{"idle keep-alive", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 300 * time.Millisecond},
		{"body never sent", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", 500 * time.Millisecond},
		{"headers never end", "GET / HTTP/1.1\r\nHost: x\r\n", 200 * time.Millisecond},
	} {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(tc.send))
		d := closedAfter(c)
		c.Close()
		t.Logf("%s: closed after %v (limit %v)", tc.name, d, tc.limit)
		if d > tc.limit+time.Second {
			t.Errorf("%s: connection held %v, limit %v", tc.name, d, tc.limit)
		}
	}
	for n, want := range map[int]int{1000: http.StatusOK, 1001: http.StatusRequestEntityTooLarge} {
		resp, err := http.Post("http://"+l.Addr().String(), "text/plain", strings.NewReader(strings.Repeat("x", n)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST of %d bytes (limit 1000) = %d, want %d", n, resp.StatusCode, want)
		}
	}
	if srv.MaxHeaderBytes != DefaultMaxHeaderBytes || srv.WriteTimeout != DefaultWriteTimeout {
		t.Errorf("defaults not applied: %+v", srv)
	}
}

// TestAuthTimeRequired: an ID token without auth_time says nothing about
// when the person signed in, so it is refused.
func TestAuthTimeRequired(t *testing.T) {
	t.Parallel()
	e := newFlowEnv(t, func(c *devprovider.Config) { c.OmitAuthTime = true }, nil)
	b := e.newTab(t)
	if _, code, body := b.signIn(e, "/login"); code != http.StatusBadGateway || !strings.Contains(body, "did not say when you signed in") {
		t.Errorf("sign-in without auth_time = %d:\n%s", code, body)
	}
	if _, _, body := b.get(e.web + "/tokens"); strings.Contains(body, "Signed in as") {
		t.Error("signed in without auth_time")
	}
}

// TestDiscoveryHangs: a provider whose discovery never answers costs each
// /login the client timeout, at the same time, not one after the other
// under a lock, and the app answers 503.
func TestDiscoveryHangs(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
	}))
	t.Cleanup(idp.Close)
	t.Cleanup(func() { close(release) }) // runs before idp.Close
	a, _, _ := newTestApp(t, idp.URL)
	a.cfg.HTTPClient = &http.Client{Timeout: time.Second}
	h := a.routes()
	start := time.Now()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if w := do(h, "GET", "/login", nil); w.Code != http.StatusServiceUnavailable {
				t.Errorf("GET /login with discovery hanging = %d, want 503", w.Code)
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	t.Logf("3 concurrent /login with a hung discovery answered after %v (client timeout 1s)", d)
	if d > 2500*time.Millisecond {
		t.Errorf("3 concurrent /login took %v, want about one 1s timeout", d)
	}
}

// TestOddIdentitiesRefused: a provider account whose email is blank, or
// spelt with the Kelvin sign (which Unicode folds to k), cannot sign in:
// it would otherwise be "nobody" (the administrator, once) or kevin.
func TestOddIdentitiesRefused(t *testing.T) {
	t.Parallel()
	for _, email := range []string{" ", "\u212Aevin@example.com"} {
		e := newFlowEnv(t, func(c *devprovider.Config) { c.Users[0].Email = email }, nil)
		b := e.newTab(t)
		if _, code, body := b.signIn(e, "/login"); code != http.StatusForbidden || !strings.Contains(body, "no verified email address") {
			t.Errorf("email %q: sign-in = %d, want 403", email, code)
		}
		if n, _ := e.st.DeleteSessionsOf(context.Background(), e.idp+"#u-alice"); n != 0 {
			t.Errorf("email %q: %d sessions were created", email, n)
		}
	}
}
