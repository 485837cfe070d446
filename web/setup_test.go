package web

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/clientsetup"
	"github.com/smtpgate/smtpgate/mailaddr"
	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/oidc/devprovider"
	"github.com/smtpgate/smtpgate/oidc/testissuer"
)

// devIdP starts the development provider on loopback.
func devIdP(t *testing.T) string {
	t.Helper()
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
	return idp.URL
}

func withSetup(a *app, incoming bool) {
	a.cfg.SubmissionsPort = 465
	a.cfg.Autoconfig = clientsetup.Autoconfig{Domains: []string{"example.com", "example.org"}}
	if incoming {
		a.cfg.Autoconfig.Incoming = &clientsetup.Incoming{Type: "imap", Hostname: "imap.example.com", Port: 993, SocketType: "SSL", Authentication: []string{"password-cleartext"}}
	}
	a.cfg.Thunderbird = clientsetup.Thunderbird{ClientID: "thunderbird", Scopes: []string{"openid", "email", "offline_access"}}
	a.cfg.Audiences = []string{"smtp-gateway"}
}

func TestAutoconfig(t *testing.T) {
	a, _, _ := newTestApp(t, "http://127.0.0.1:1")
	h := a.routes()
	if w := do(h, "GET", "/mail/config-v1.1.xml?emailaddress=alice@example.com", nil); w.Code != http.StatusNotFound {
		t.Errorf("autoconfig with no domains configured = %d, want 404", w.Code)
	}
	withSetup(a, true)
	tests := []struct {
		target, host string
		code         int
		domain       string
	}{
		{"/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40Example.com", "example.com", 200, "example.com"},
		{"/mail/config-v1.1.xml?emailaddress=bob%40example.org", "autoconfig.example.org", 200, "example.org"},
		{"/mail/config-v1.1.xml", "autoconfig.example.org:443", 200, "example.org"},
		{"/.well-known/autoconfig/mail/config-v1.1.xml", "EXAMPLE.com", 200, "example.com"},
		{"/mail/config-v1.1.xml?emailaddress=alice%40example.net", "autoconfig.example.com", 404, ""},
		{"/mail/config-v1.1.xml", "autoconfig.example.net", 404, ""},
		{"/mail/config-v1.1.xml?emailaddress=not-an-address", "autoconfig.example.com", 400, ""},
		{"/mail/config-v1.1.xml?emailaddress=", "autoconfig.example.com", 400, ""},
		{"/mail/config-v1.1.xml?emailaddress=Eve+%3Ceve%40example.com%3E", "autoconfig.example.com", 400, ""},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", tc.target, nil)
		r.Host = tc.host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.code {
			t.Errorf("GET %s (Host %s) = %d, want %d:\n%s", tc.target, tc.host, w.Code, tc.code, w.Body)
			continue
		}
		if tc.code != 200 {
			continue
		}
		if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/xml") {
			t.Errorf("Content-Type = %q", ct)
		}
		var doc struct {
			Provider struct {
				ID       string `xml:"id,attr"`
				Incoming []struct {
					Hostname string `xml:"hostname"`
				} `xml:"incomingServer"`
				Outgoing []struct {
					Hostname   string   `xml:"hostname"`
					Port       int      `xml:"port"`
					SocketType string   `xml:"socketType"`
					Auth       []string `xml:"authentication"`
					Username   string   `xml:"username"`
				} `xml:"outgoingServer"`
			} `xml:"emailProvider"`
		}
		if err := xml.Unmarshal(w.Body.Bytes(), &doc); err != nil {
			t.Fatalf("GET %s: %v", tc.target, err)
		}
		p := doc.Provider
		if p.ID != tc.domain || len(p.Outgoing) != 2 || len(p.Incoming) != 1 || p.Incoming[0].Hostname != "imap.example.com" {
			t.Errorf("GET %s: provider %+v", tc.target, p)
			continue
		}
		o1, o2 := p.Outgoing[0], p.Outgoing[1]
		if o1.Hostname != "mail.example.com" || o1.Port != 465 || o1.SocketType != "SSL" || o2.Port != 587 || o2.SocketType != "STARTTLS" ||
			strings.Join(o1.Auth, ",") != "OAuth2,password-cleartext" || o1.Username != "%EMAILADDRESS%" {
			t.Errorf("GET %s: outgoing %+v %+v", tc.target, o1, o2)
		}
	}
}

func TestThunderbirdAddon(t *testing.T) {
	idp := devIdP(t)
	a, _, session := newTestApp(t, idp)
	h := a.routes()
	if w := do(h, "GET", "/setup/thunderbird/addon.xpi", nil); w.Code != http.StatusNotFound {
		t.Errorf("add-on without thunderbird.client_id = %d, want 404", w.Code)
	}
	withSetup(a, false)

	// Public: Thunderbird fetches it from the policy's install_url.
	w := do(h, "GET", "/setup/thunderbird/addon.xpi", nil)
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/x-xpinstall" ||
		!strings.Contains(w.Header().Get("Content-Disposition"), `filename="oauth-provider@mail.example.com.xpi"`) {
		t.Fatalf("GET addon.xpi = %d %v", w.Code, w.Header())
	}
	z, err := zip.NewReader(bytes.NewReader(w.Body.Bytes()), int64(w.Body.Len()))
	if err != nil || len(z.File) != 1 || z.File[0].Name != "manifest.json" {
		t.Fatalf("addon.xpi is not a zip with manifest.json: %v", err)
	}
	f, _ := z.File[0].Open()
	raw, _ := io.ReadAll(f)
	var m struct {
		OAuthProvider map[string]any `json:"oauth_provider"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	op := m.OAuthProvider
	u, _ := url.Parse(idp)
	if op["issuer"] != u.Hostname() || op["clientId"] != "thunderbird" || op["authorizationEndpoint"] != idp+"/authorize" ||
		op["tokenEndpoint"] != idp+"/oauth/token" && op["tokenEndpoint"] != idp+"/token" || op["usePKCE"] != true || op["scopes"] != "openid email offline_access" {
		t.Errorf("oauth_provider = %v (provider %s)", op, idp)
	}

	w = do(h, "GET", "/setup/thunderbird/policies.json", nil)
	var pol struct {
		Policies struct {
			ExtensionSettings map[string]map[string]string
		} `json:"policies"`
	}
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &pol) != nil {
		t.Fatalf("GET policies.json = %d %s", w.Code, w.Body)
	}
	if s := pol.Policies.ExtensionSettings["oauth-provider@mail.example.com"]; s["installation_mode"] != "force_installed" || s["install_url"] != "http://127.0.0.1:1/setup/thunderbird/addon.xpi" {
		t.Errorf("policies.json = %s", w.Body)
	}

	// The page, after sign-in, with the admin's part.
	if w := do(h, "GET", "/setup/thunderbird", nil); w.Code != http.StatusSeeOther {
		t.Errorf("GET /setup/thunderbird signed out = %d, want 303 to sign in", w.Code)
	}
	w = do(h, "GET", "/setup/thunderbird", nil, session(alice()))
	body := w.Body.String()
	for _, want := range []string{"/setup/thunderbird/addon.xpi", "force_installed", "extensions/oauth-provider@mail.example.com.xpi", "extensions.autoDisableScopes", "<code>smtp-gateway</code>", "oauth://" + u.Hostname(), "<code>465</code>", "OAuth2", "alice@example.com", "PKCE"} {
		if !strings.Contains(body, want) {
			t.Errorf("/setup/thunderbird lacks %q", want)
		}
	}

	// A built-in provider name is refused with a clear error.
	a.cfg.Thunderbird.ProviderName = "accounts.google.com"
	if w := do(h, "GET", "/setup/thunderbird/addon.xpi", nil); w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), "built-in providers") {
		t.Errorf("add-on named accounts.google.com = %d %s", w.Code, w.Body)
	}
}

func TestThunderbirdAddonIdPDown(t *testing.T) {
	a, _, _ := newTestApp(t, "http://127.0.0.1:1")
	withSetup(a, false)
	if w := do(a.routes(), "GET", "/setup/thunderbird/addon.xpi", nil); w.Code != http.StatusServiceUnavailable {
		t.Errorf("add-on with the provider down = %d, want 503", w.Code)
	}
}

func TestSetupPages(t *testing.T) {
	a, _, session := newTestApp(t, "http://127.0.0.1:1")
	withSetup(a, true)
	a.cfg.Thunderbird = clientsetup.Thunderbird{}
	h := a.routes()
	c := session(alice())
	w := do(h, "GET", "/setup", nil, c)
	for _, cl := range setupClients {
		if !strings.Contains(w.Body.String(), `href="/setup/`+cl.ID+`"`) {
			t.Errorf("/setup does not link %s", cl.ID)
		}
		w := do(h, "GET", "/setup/"+cl.ID, nil, c)
		body := w.Body.String()
		if w.Code != http.StatusOK || !strings.Contains(body, "mail.example.com") || !strings.Contains(body, "alice@example.com") {
			t.Errorf("/setup/%s = %d, want the host and address:\n%s", cl.ID, w.Code, body)
		}
		if w := do(h, "GET", "/setup/"+cl.ID, nil); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login?return=/setup" {
			t.Errorf("/setup/%s signed out = %d to %q, want 303 to sign in and come back", cl.ID, w.Code, w.Header().Get("Location"))
		}
	}
	// The order a client asks in: K-9's outgoing server is Server,
	// Security, Port, ..., Username, Authentication, Password.
	body := do(h, "GET", "/setup/android", nil, c).Body.String()
	if !inOrder(body, ">Server<", ">Security<", ">Port<", ">Username<", ">Authentication<", ">Password<") {
		t.Errorf("/setup/android is not in K-9's order:\n%s", body)
	}
	body = do(h, "GET", "/setup/msmtp", nil, c).Body.String()
	if !strings.Contains(body, "auth oauthbearer") || !strings.Contains(body, "port 465") || !strings.Contains(body, "passwordeval") {
		t.Errorf("/setup/msmtp:\n%s", body)
	}
	// Without the add-on, Thunderbird's page says to use an app token.
	if body := do(h, "GET", "/setup/thunderbird", nil, c).Body.String(); !strings.Contains(body, "No Thunderbird add-on is configured") {
		t.Errorf("/setup/thunderbird without add-on:\n%s", body)
	}
	if w := do(h, "GET", "/setup/lotus-notes", nil, c); w.Code != http.StatusNotFound {
		t.Errorf("/setup/lotus-notes = %d, want 404", w.Code)
	}
}

func inOrder(s string, parts ...string) bool {
	for _, p := range parts {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}

func TestAppleProfile(t *testing.T) {
	a, _, session := newTestApp(t, "http://127.0.0.1:1")
	h := a.routes()
	c := session(alice())
	form := url.Values{"label": {"iPhone"}, "days": {"90"}, "sender": {"alice@example.com"}}
	if w := do(h, "POST", "/setup/apple/profile", form, c); w.Code != http.StatusNotFound {
		t.Errorf("profile without an incoming server = %d, want 404", w.Code)
	}
	withSetup(a, true)
	// The Apple page carries the consent nonce the POST spends.
	nonceRE := regexp.MustCompile(`name="nonce" value="([^"]+)"`)
	page := do(h, "GET", "/setup/apple", nil, c)
	nm := nonceRE.FindStringSubmatch(page.Body.String())
	if nm == nil {
		t.Fatalf("/setup/apple has no nonce:\n%s", page.Body)
	}
	form.Set("nonce", nm[1])
	w := do(h, "POST", "/setup/apple/profile", form, c)
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/x-apple-aspen-config" {
		t.Fatalf("POST /setup/apple/profile = %d %v\n%s", w.Code, w.Header(), w.Body)
	}
	var plist struct {
		XMLName xml.Name `xml:"plist"`
	}
	if err := xml.Unmarshal(w.Body.Bytes(), &plist); err != nil {
		t.Fatalf("profile is not XML: %v", err)
	}
	m := regexp.MustCompile(`<key>OutgoingPassword</key>\s*<string>([^<]+)</string>`).FindSubmatch(w.Body.Bytes())
	if m == nil {
		t.Fatalf("profile has no OutgoingPassword:\n%s", w.Body)
	}
	// The password is a live app token for alice, labelled as asked.
	tok, err := a.cfg.Store.Check(context.Background(), "alice@example.com", string(m[1]), "test")
	if err != nil || tok.Label != "iPhone" {
		t.Errorf("the profile's token: %v, %+v", err, tok)
	}
	// A stale sign-in gets the sign-in-again page and no token.
	old := alice()
	old.AuthTime = time.Now().Add(-time.Hour).Unix()
	if w := do(h, "POST", "/setup/apple/profile", form, session(old)); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "/login?reauth=1") {
		t.Errorf("stale sign-in = %d, want the sign-in-again page", w.Code)
	}
	if w := do(h, "POST", "/setup/apple/profile", url.Values{"label": {"x"}, "days": {"90"}, "sender": {"boss@example.com"}}, c); w.Code != http.StatusBadRequest {
		t.Errorf("profile for a foreign sender = %d, want 400", w.Code)
	}
	// A replayed POST mints nothing.
	if w := do(h, "POST", "/setup/apple/profile", form, c); w.Code != http.StatusConflict {
		t.Errorf("replayed profile POST = %d, want 409", w.Code)
	}
	if l, _ := a.cfg.Store.ListOwned(context.Background(), mailaddr.MustParse("alice@example.com")); len(l) != 1 {
		t.Errorf("store holds %d tokens, want 1", len(l))
	}
	if w := do(h, "POST", "/setup/apple/profile", form); w.Code != http.StatusUnauthorized {
		t.Errorf("profile signed out = %d, want 401", w.Code)
	}
}

func TestDebugToken(t *testing.T) {
	iss := testissuer.New(t)
	v, err := oidc.New(oidc.Config{Issuers: []oidc.IssuerConfig{{Issuer: iss.URL, Audiences: []string{testissuer.Audience}}}})
	if err != nil {
		t.Fatal(err)
	}
	a, _, session := newTestApp(t, "http://127.0.0.1:1")
	h := a.routes()
	c := session(alice())
	if w := do(h, "GET", "/debug/token", nil, c); w.Code != http.StatusNotFound {
		t.Errorf("/debug/token without a verifier = %d, want 404", w.Code)
	}
	a.cfg.Verifier = v
	if w := do(h, "GET", "/debug/token", nil); w.Code != http.StatusUnauthorized {
		t.Errorf("/debug/token signed out = %d, want 401", w.Code)
	}
	if w := do(h, "POST", "/debug/token", url.Values{"token": {iss.Token(t, nil)}}); w.Code != http.StatusUnauthorized {
		t.Errorf("POST /debug/token signed out = %d, want 401", w.Code)
	}
	good := iss.Token(t, nil)
	w := do(h, "POST", "/debug/token", url.Values{"token": {"Bearer " + good + "\n"}}, c)
	if body := w.Body.String(); w.Code != http.StatusOK || !strings.Contains(body, "<h2>Accepted</h2>") || !strings.Contains(body, "may send as") || strings.Contains(body, good) {
		t.Errorf("good token: %d\n%s", w.Code, body)
	}
	bad := iss.Token(t, map[string]any{"aud": "other", "exp": time.Now().Add(-time.Hour)})
	w = do(h, "POST", "/debug/token", url.Values{"token": {bad}}, c)
	body := w.Body.String()
	if w.Code != http.StatusOK || !strings.Contains(body, "<h2>Refused</h2>") || !strings.Contains(body, "token expired") || !strings.Contains(body, "audience not accepted") {
		t.Errorf("bad token: %d\n%s", w.Code, body)
	}
	if w := do(h, "POST", "/debug/token", url.Values{"token": {"  "}}, c); w.Code != http.StatusBadRequest {
		t.Errorf("empty token = %d, want 400", w.Code)
	}
	if w := do(h, "POST", "/debug/token", url.Values{"token": {strings.Repeat("a", 200<<10)}}, c); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("huge form = %d, want 413", w.Code)
	}
}

// TestSetupSignInReturns checks that signing in from a setup page leads
// back to the setup pages.
func TestSetupSignInReturns(t *testing.T) {
	idp := devIdP(t)
	a, h, _ := newTestApp(t, idp)
	w := do(h, "GET", "/login?return=/setup", nil)
	var pl pendingLogin
	loc, _ := url.Parse(w.Header().Get("Location"))
	name := a.loginCookie(loc.Query().Get("state"))
	for _, c := range w.Result().Cookies() {
		if c.Name == name {
			a.sessions.open(name, c.Value, &pl, time.Now())
		}
	}
	if w.Code != http.StatusFound || pl.Return != "/setup" {
		t.Errorf("GET /login?return=/setup = %d, sign-in returns to %q; want /setup", w.Code, pl.Return)
	}
}
