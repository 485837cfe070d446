package web

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/mailaddr"
	"github.com/smtpgate/smtpgate/oidc/devprovider"
	"github.com/smtpgate/smtpgate/store"
)

// newTestApp returns the app with a real SQLite store, its handler, and a
// function that makes a session cookie as a sign-in would.
func newTestApp(t *testing.T, issuer string) (*app, http.Handler, func(s signIn) *http.Cookie) {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	st, err := store.Open(context.Background(), "sqlite", filepath.Join(t.TempDir(), "db"), store.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := Config{BaseURL: "http://127.0.0.1:1", Issuer: issuer, ClientID: "web", Store: st, Key: key, SMTPHost: "mail.example.com", SubmissionPort: 587}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	tmpl, err := parseTemplates()
	if err != nil {
		t.Fatal(err)
	}
	a := &app{cfg: cfg, log: cfg.Logger, tmpl: tmpl, sessions: newCookieCodec(deriveKey(key, "smtpgate web session v1"))}
	mk := func(s signIn) *http.Cookie {
		t.Helper()
		w := httptest.NewRecorder()
		if err := a.startSession(w, httptest.NewRequest("GET", "/", nil), s); err != nil {
			t.Fatal(err)
		}
		for _, c := range w.Result().Cookies() {
			if c.Name == a.sessionCookie() {
				return c
			}
		}
		t.Fatal("startSession set no cookie")
		return nil
	}
	return a, a.routes(), mk
}

func alice() signIn {
	return signIn{Subject: "iss#alice", Addresses: []string{"alice@example.com", "team@example.com"}, AuthTime: time.Now().Unix()}
}

func do(h http.Handler, method, target string, form url.Values, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	var body *strings.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	} else {
		body = strings.NewReader("")
	}
	r := httptest.NewRequest(method, target, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, c := range cookies {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestSecurityHeaders(t *testing.T) {
	_, h, _ := newTestApp(t, "http://127.0.0.1:1")
	for _, path := range []string{"/", "/tokens", "/nope", "/static/style.css"} {
		w := do(h, "GET", path, nil)
		for k, want := range map[string]string{
			"Referrer-Policy":        "no-referrer",
			"X-Content-Type-Options": "nosniff",
			"X-Frame-Options":        "DENY",
		} {
			if got := w.Header().Get(k); got != want {
				t.Errorf("GET %s: %s = %q, want %q", path, k, got, want)
			}
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s: CSP = %q", path, csp)
		}
	}
}

func TestCrossSitePostRefused(t *testing.T) {
	_, h, session := newTestApp(t, "http://127.0.0.1:1")
	r := httptest.NewRequest("POST", "/tokens/revoke-all", nil)
	r.Header.Set("Sec-Fetch-Site", "cross-site")
	r.AddCookie(session(alice()))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Errorf("cross-site POST = %d, want 403", w.Code)
	}
	r = httptest.NewRequest("POST", "/tokens/revoke-all", nil)
	r.Header.Set("Origin", "https://evil.example")
	r.Host = "127.0.0.1:1"
	r.AddCookie(session(alice()))
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Errorf("POST with a foreign Origin = %d, want 403", w.Code)
	}
}

func TestTamperedCookieRefused(t *testing.T) {
	a, h, session := newTestApp(t, "http://127.0.0.1:1")
	good := session(alice())
	if w := do(h, "GET", "/tokens", nil, good); w.Code != http.StatusOK {
		t.Fatalf("GET /tokens with a good session = %d", w.Code)
	}
	b := []byte(good.Value)
	b[len(b)/2] ^= 1
	for name, c := range map[string]*http.Cookie{
		"flipped bit": {Name: good.Name, Value: string(b)},
		"garbage":     {Name: good.Name, Value: "x"},
		// A login cookie is sealed for another name: it cannot stand in
		// for a session.
		"other cookie's value": {Name: good.Name, Value: mustSeal(t, a, a.loginCookie("STATE"), sessionRef{"x"})},
	} {
		if w := do(h, "GET", "/tokens", nil, c); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
			t.Errorf("%s: GET /tokens = %d %s, want a redirect to sign in", name, w.Code, w.Header().Get("Location"))
		}
	}
	var ref sessionRef
	if err := a.sessions.open(good.Name, good.Value, &ref, time.Now()); err != nil {
		t.Fatal(err)
	}
	expired, _ := a.sessions.seal(a.sessionCookie(), ref, time.Now().Add(-time.Second))
	if w := do(h, "GET", "/tokens", nil, &http.Cookie{Name: good.Name, Value: expired}); w.Code != http.StatusSeeOther {
		t.Errorf("expired session: GET /tokens = %d, want a redirect", w.Code)
	}
}

func mustSeal(t *testing.T, a *app, name string, v any) string {
	t.Helper()
	s, err := a.sessions.seal(name, v, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCallbackState(t *testing.T) {
	a, h, _ := newTestApp(t, "http://127.0.0.1:1")
	pending := &http.Cookie{Name: a.loginCookie("SA"), Value: mustSeal(t, a, a.loginCookie("SA"), pendingLogin{State: "SA", Nonce: "n", Verifier: "v", Return: "/tokens"})}
	// The login cookie of state SA, renamed to stand for state SB.
	renamed := &http.Cookie{Name: a.loginCookie("SB"), Value: pending.Value}
	tests := []struct {
		name    string
		target  string
		cookies []*http.Cookie
	}{
		{"no login cookie", "/auth/callback?state=SA&code=c", nil},
		{"forged state", "/auth/callback?state=SB&code=c", []*http.Cookie{pending}},
		{"renamed cookie", "/auth/callback?state=SB&code=c", []*http.Cookie{pending, renamed}},
		{"empty state", "/auth/callback?code=c", []*http.Cookie{pending}},
		{"unusable state", "/auth/callback?state=s%3Bx&code=c", []*http.Cookie{pending}},
		// An attacker's error_description is never shown, and an error
		// counts only once the state matched.
		{"error without state", "/auth/callback?error=access_denied&error_description=Call+0800-EVIL", []*http.Cookie{pending}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := do(h, "GET", tc.target, nil, tc.cookies...)
			if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "no longer valid") || strings.Contains(w.Body.String(), "EVIL") {
				t.Errorf("GET %s = %d, want 400 with an explanation", tc.target, w.Code)
			}
			u, _ := url.Parse(tc.target)
			if st := u.Query().Get("state"); validState(st) {
				if sc := w.Header().Get("Set-Cookie"); !strings.Contains(sc, a.loginCookie(st)+"=;") {
					t.Errorf("the login cookie was not cleared: %q", sc)
				}
			}
		})
	}
}

// TestNoOpenRedirect runs /login against a real provider with every kind
// of return parameter: the sign-in always leads back to /tokens, and the
// provider is sent only the registered callback.
func TestNoOpenRedirect(t *testing.T) {
	idp := httptest.NewUnstartedServer(nil)
	p, err := devprovider.New(devprovider.Config{
		Issuer:        "http://" + idp.Listener.Addr().String(),
		Users:         []devprovider.User{{Username: "alice", Password: "pw", Email: "alice@example.com", EmailVerified: true}},
		Clients:       []devprovider.Client{{ID: "web", Secret: "s", RedirectURIs: []string{"http://127.0.0.1:1/auth/callback"}}},
		AllowInsecure: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	idp.Config.Handler = p.Handler()
	idp.Start()
	t.Cleanup(idp.Close)
	a, h, _ := newTestApp(t, idp.URL)
	for _, ret := range []string{"https://evil.example/", "//evil.example", "/\\evil.example", "javascript:alert(1)", "/tokens/../../x", "/tokens"} {
		w := do(h, "GET", "/login?return="+url.QueryEscape(ret)+"&redirect_uri=https://evil.example/", nil)
		if w.Code != http.StatusFound {
			t.Fatalf("GET /login = %d", w.Code)
		}
		loc, err := url.Parse(w.Header().Get("Location"))
		if err != nil || !strings.HasPrefix(loc.String(), idp.URL+"/") {
			t.Errorf("return=%q: /login redirects to %q, want the provider", ret, loc)
			continue
		}
		if got := loc.Query().Get("redirect_uri"); got != "http://127.0.0.1:1/auth/callback" {
			t.Errorf("return=%q: redirect_uri sent to the provider = %q", ret, got)
		}
		var pl pendingLogin
		var ck *http.Cookie
		for _, c := range w.Result().Cookies() {
			if c.Name == a.loginCookie(loc.Query().Get("state")) {
				ck = c
			}
		}
		if ck == nil || a.sessions.open(ck.Name, ck.Value, &pl, time.Now()) != nil {
			t.Fatalf("return=%q: no login cookie", ret)
		}
		if pl.Return != "/tokens" {
			t.Errorf("return=%q: the sign-in would lead back to %q, want /tokens", ret, pl.Return)
		}
		if loc.Query().Get("code_challenge_method") != "S256" || loc.Query().Get("state") != pl.State || loc.Query().Get("nonce") != pl.Nonce {
			t.Errorf("return=%q: authorization request lacks PKCE S256, state or nonce: %s", ret, loc)
		}
	}
}

func TestTokenPages(t *testing.T) {
	a, h, session := newTestApp(t, "http://127.0.0.1:1")
	var audit strings.Builder
	a.log = slog.New(slog.NewJSONHandler(&audit, nil))
	c := session(alice())
	label := `<script>alert("x")</script> iPhone`
	form := url.Values{"label": {label}, "days": {"90"}, "sender": {"alice@example.com", "TEAM@example.com"}}

	w := do(h, "POST", "/tokens/new", form, c)
	body := w.Body.String()
	if w.Code != http.StatusOK || !strings.Contains(body, "may send mail as") || !strings.Contains(body, "until <strong>"+time.Now().Add(90*24*time.Hour).UTC().Format("2006-01-02")) {
		t.Fatalf("consent page = %d:\n%s", w.Code, body)
	}
	if strings.Contains(body, "<script>alert") || !strings.Contains(body, "&lt;script&gt;") {
		t.Errorf("label not escaped on the consent page")
	}
	form.Set("nonce", nonceOf(t, body))
	w = do(h, "POST", "/tokens/confirm", form, c)
	body = w.Body.String()
	if w.Code != http.StatusOK {
		t.Fatalf("confirm = %d:\n%s", w.Code, body)
	}
	// A reload of the created page, or a replayed POST, mints nothing.
	if w := do(h, "POST", "/tokens/confirm", form, c); w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "no token was created") {
		t.Errorf("confirm replayed = %d, want 409 and nothing created", w.Code)
	}
	list, _ := a.cfg.Store.ListOwned(context.Background(), mailaddr.MustParse("alice@example.com"))
	if len(list) != 1 || list[0].Label != label || strings.Join(list[0].Senders, ",") != "alice@example.com,team@example.com" {
		t.Fatalf("store holds %+v", list)
	}
	if !strings.Contains(body, `value="smtpgate_`) || !strings.Contains(body, "shown only this once") {
		t.Errorf("created page does not show the token:\n%s", body)
	}
	// One audit line: who, what, which token; never the secret.
	secret := regexp.MustCompile(`smtpgate_[0-9A-Za-z]{50}`).FindString(body)
	if !strings.Contains(audit.String(), `"msg":"audit: token created","by":"iss#alice","via":"web","id":"`+list[0].ID+`"`) || secret == "" || strings.Contains(audit.String(), secret) {
		t.Errorf("audit log = %s", audit.String())
	}
	if list[0].Creator != "iss#alice" {
		t.Errorf("creator = %q, want iss#alice", list[0].Creator)
	}

	// Refusals.
	for name, f := range map[string]url.Values{
		"no label":          {"label": {" "}, "days": {"90"}, "sender": {"alice@example.com"}},
		"foreign sender":    {"label": {"x"}, "days": {"90"}, "sender": {"boss@example.com"}},
		"no sender":         {"label": {"x"}, "days": {"90"}},
		"lifetime over max": {"label": {"x"}, "days": {"9999"}, "sender": {"alice@example.com"}},
	} {
		if w := do(h, "POST", "/tokens/confirm", f, c); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `role="alert"`) {
			t.Errorf("%s: confirm = %d, want 400 with the problem listed", name, w.Code)
		}
	}
	// An old sign-in must sign in again before creating a token.
	old := alice()
	old.AuthTime = time.Now().Add(-time.Hour).Unix()
	if w := do(h, "POST", "/tokens/confirm", form, session(old)); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "/login?reauth=1") {
		t.Errorf("stale sign-in: confirm = %d, want the sign-in-again page", w.Code)
	}
	if n, _ := a.cfg.Store.ListOwned(context.Background(), mailaddr.MustParse("alice@example.com")); len(n) != 1 {
		t.Errorf("store holds %d tokens after refusals, want 1", len(n))
	}

	// The list shows it; another user cannot revoke it; the owner can.
	w = do(h, "GET", "/tokens", nil, c)
	if !strings.Contains(w.Body.String(), "&lt;script&gt;") || !strings.Contains(w.Body.String(), "active") {
		t.Errorf("token list:\n%s", w.Body.String())
	}
	bob := signIn{Subject: "iss#bob", Addresses: []string{"bob@example.com"}, AuthTime: time.Now().Unix()}
	if w := do(h, "POST", "/tokens/"+list[0].ID+"/revoke", nil, session(bob)); w.Code != http.StatusNotFound {
		t.Errorf("revoke by another user = %d, want 404", w.Code)
	}
	if w := do(h, "POST", "/tokens/"+list[0].ID+"/revoke", nil, c); w.Code != http.StatusSeeOther {
		t.Errorf("revoke = %d, want 303", w.Code)
	}
	if tok, _ := a.cfg.Store.Get(context.Background(), list[0].ID); tok.RevokedAt.IsZero() || tok.RevokedBy != "owner:iss#alice" {
		t.Errorf("token revoked at %v by %q, want revoked by owner:iss#alice", tok.RevokedAt, tok.RevokedBy)
	}
	if !strings.Contains(audit.String(), `"msg":"audit: token revoked","by":"iss#alice","via":"web","id":"`+list[0].ID+`"`) {
		t.Errorf("no audit line for the revocation: %s", audit.String())
	}
	if w := do(h, "GET", "/tokens", nil, c); !strings.Contains(w.Body.String(), "revoked") || strings.Contains(w.Body.String(), "Revoke all tokens") {
		t.Errorf("after revoking the only token, the list = \n%s\nwant it shown revoked and no Revoke all", w.Body.String())
	}
}

var nonceField = regexp.MustCompile(`name="nonce" value="([^"]+)"`)

// nonceOf returns the consent nonce of a consent page.
func nonceOf(t *testing.T, body string) string {
	t.Helper()
	m := nonceField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no nonce on the consent page:\n%s", body)
	}
	return m[1]
}

func TestLoginIdPDown(t *testing.T) {
	_, h, _ := newTestApp(t, "http://127.0.0.1:1")
	if w := do(h, "GET", "/login", nil); w.Code != http.StatusServiceUnavailable {
		t.Errorf("GET /login with the provider down = %d, want 503", w.Code)
	}
}

func TestOutboxPages(t *testing.T) {
	a, _, _ := newTestApp(t, "http://127.0.0.1:1")
	if w := do(a.routes(), "GET", "/outbox", nil); w.Code != http.StatusNotFound {
		t.Errorf("GET /outbox without an outbox = %d, want 404", w.Code)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "new"), 0o700)
	raw := "Return-Path: <alice@example.com>\r\nX-Envelope-To: bob@example.org\r\nSubject: <b>hi</b>\r\n\r\nbody\r\n"
	os.WriteFile(filepath.Join(dir, "new", "1.abc.eml"), []byte(raw), 0o600)
	a.cfg.OutboxDir = dir
	h := a.routes()
	w := do(h, "GET", "/outbox", nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `href="/outbox/1.abc"`) || !strings.Contains(w.Body.String(), "&lt;b&gt;hi&lt;/b&gt;") {
		t.Errorf("GET /outbox = %d:\n%s", w.Code, w.Body.String())
	}
	w = do(h, "GET", "/outbox/1.abc", nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "X-Envelope-To: bob@example.org") {
		t.Errorf("GET /outbox/1.abc = %d:\n%s", w.Code, w.Body.String())
	}
	for _, bad := range []string{"/outbox/..%2f..%2fetc%2fpasswd", "/outbox/nope"} {
		if w := do(h, "GET", bad, nil); w.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", bad, w.Code)
		}
	}
}

// HSTS only with an https base URL; no directory listing under /static/.
func TestHSTSAndStatic(t *testing.T) {
	a, h, _ := newTestApp(t, "http://127.0.0.1:1")
	if w := do(h, "GET", "/", nil); w.Header().Get("Strict-Transport-Security") != "" {
		t.Error("HSTS over http")
	}
	a.secure = true
	if w := do(a.routes(), "GET", "/", nil); w.Header().Get("Strict-Transport-Security") != "max-age=31536000" {
		t.Errorf("HSTS with https = %q", w.Header().Get("Strict-Transport-Security"))
	}
	for _, p := range []string{"/static/", "/static//", "/static/../static/"} {
		if w := do(h, "GET", p, nil); w.Code != http.StatusNotFound || strings.Contains(w.Body.String(), "<a href=\"style.css\">") {
			t.Errorf("GET %s = %d, want 404 and no listing", p, w.Code)
		}
	}
	if w := do(h, "GET", "/static/style.css", nil); w.Code != http.StatusOK {
		t.Errorf("GET /static/style.css = %d", w.Code)
	}
}

// Every POST is a small urlencoded form: a big one gets 413, a multipart
// one 415, before any handler runs.
func TestPostLimits(t *testing.T) {
	a, h, session := newTestApp(t, "http://127.0.0.1:1")
	c := session(alice())
	big := url.Values{"label": {strings.Repeat("x", maxFormBytes)}, "days": {"90"}, "sender": {"alice@example.com"}}
	if w := do(h, "POST", "/tokens/new", big, c); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("POST of %d bytes = %d, want 413", len(big.Encode()), w.Code)
	}
	r := httptest.NewRequest("POST", "/tokens/new", strings.NewReader("--b\r\nContent-Disposition: form-data; name=\"label\"\r\n\r\nx\r\n--b--\r\n"))
	r.Header.Set("Content-Type", "multipart/form-data; boundary=b")
	r.AddCookie(c)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusUnsupportedMediaType {
		t.Errorf("multipart POST = %d, want 415", w.Code)
	}
	if l, _ := a.cfg.Store.ListAll(context.Background()); len(l) != 0 {
		t.Errorf("%d tokens", len(l))
	}
}

// Behind a trusted proxy the client is the rightmost untrusted
// X-Forwarded-For hop; from anyone else the header is ignored.
func TestTrustedProxies(t *testing.T) {
	a, _, _ := newTestApp(t, "http://127.0.0.1:1")
	a.cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, tc := range []struct{ remote, xff, want string }{
		{"10.1.2.3:5000", "198.51.100.7", "198.51.100.7"},
		{"10.1.2.3:5000", "203.0.113.9, 198.51.100.7, 10.9.9.9", "198.51.100.7"}, // the client cannot pick
		{"[::1]:5000", "2001:db8::1", "2001:db8::1"},
		{"192.0.2.1:5000", "198.51.100.7", "192.0.2.1"}, // not a proxy: header ignored
		{"10.1.2.3:5000", "", "10.1.2.3"},
		{"10.1.2.3:5000", "garbage", "10.1.2.3"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := a.remoteIP(r); got != tc.want {
			t.Errorf("remote %s, X-Forwarded-For %q: client = %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}
