package devprovider

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coreoidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	sgoidc "github.com/smtpgate/smtpgate/oidc"
)

// testKey is one RSA key for all tests: generating a key per test would
// dominate the run time under -race. TestSigningKey covers generation.
var testKey = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, 2048)
})

func key(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := testKey()
	if err != nil {
		t.Fatalf("rsa.GenerateKey: %v", err)
	}
	return k
}

const (
	webappSecret = "webapp-secret"
	alicePass    = "alice-password"
)

// testEnv is a provider on a loopback httptest server, plus a client
// application whose /callback is the registered redirect URI.
type testEnv struct {
	p        *Provider
	issuer   string
	callback string       // the client app's redirect URI
	hits     atomic.Int32 // requests the client app received
}

// newTestEnv starts a provider with users alice and bob and two clients:
// "webapp", confidential, registered with the exact callback URI, and
// "thunderbird", public, registered as "http://127.0.0.1/callback", so that
// the callback, which has a port, matches only by RFC 8252 section 7.3.
func newTestEnv(t *testing.T, mutate func(*Config)) *testEnv {
	t.Helper()
	e := &testEnv{}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "callback ok")
	}))
	t.Cleanup(app.Close)
	e.callback = app.URL + "/callback"

	srv := httptest.NewUnstartedServer(nil)
	e.issuer = "http://" + srv.Listener.Addr().String()
	scopes := []string{"openid", "email", "profile", "offline_access", "smtp.send"}
	cfg := Config{
		Issuer: e.issuer,
		Users: []User{
			{
				Subject: "u-alice", Username: "alice", Password: alicePass,
				Email: "alice@example.com", EmailVerified: true, Name: "Alice Liddell",
				Aliases: []string{"postmaster@example.com"}, Groups: []string{"staff"},
			},
			{Username: "bob", Password: "bob-password", Email: "bob@example.com", EmailVerified: true, Name: "Bob"},
		},
		Clients: []Client{
			{ID: "webapp", Secret: webappSecret, RedirectURIs: []string{e.callback}, Scopes: scopes},
			{ID: "thunderbird", RedirectURIs: []string{"http://127.0.0.1/callback"}, Scopes: scopes},
		},
		SigningKey:    key(t),
		AllowInsecure: true,
		Logger:        slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.p = p
	srv.Config.Handler = p.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	return e
}

// oauth2Config returns the configuration of a client, with its endpoints
// found through discovery.
func (e *testEnv) oauth2Config(t *testing.T, clientID string, scopes ...string) (*oauth2.Config, *coreoidc.Provider) {
	t.Helper()
	op, err := coreoidc.NewProvider(t.Context(), e.issuer)
	if err != nil {
		t.Fatalf("coreoidc.NewProvider(%q): %v", e.issuer, err)
	}
	ep := op.Endpoint()
	conf := &oauth2.Config{ClientID: clientID, Endpoint: ep, RedirectURL: e.callback, Scopes: scopes}
	if clientID == "webapp" {
		conf.ClientSecret = webappSecret
		conf.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	} else {
		conf.Endpoint.AuthStyle = oauth2.AuthStyleInParams
	}
	return conf, op
}

// gatewayVerifier is smtpgate's verifier, configured as the gateway would
// be for this provider.
func (e *testEnv) gatewayVerifier(t *testing.T) *sgoidc.Verifier {
	t.Helper()
	v, err := sgoidc.New(sgoidc.Config{Issuers: []sgoidc.IssuerConfig{{
		Issuer:       e.p.Issuer(),
		Audiences:    []string{"smtp-gateway"},
		AliasesClaim: "aliases",
	}}})
	if err != nil {
		t.Fatalf("oidc.New: %v", err)
	}
	return v
}

// newBrowser returns an HTTP client with a cookie jar that follows
// redirects, like a browser.
func newBrowser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

// noRedirects returns a client that stops at the first response.
func noRedirects() *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp, readBody(t, resp)
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

var (
	actionRE = regexp.MustCompile(`<form method="post" action="([^"]+)">`)
	idRE     = regexp.MustCompile(`name="authRequestID" value="([^"]+)"`)
)

// loginForm is the login page as the browser got it.
type loginForm struct {
	action, id, body string
}

// openLoginForm follows authURL to the login form.
func openLoginForm(t *testing.T, browser *http.Client, authURL string) loginForm {
	t.Helper()
	resp, body := get(t, browser, authURL)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != loginPath {
		t.Fatalf("GET auth URL ended at %s with %s, want the login form; body:\n%s", resp.Request.URL, resp.Status, body)
	}
	a, i := actionRE.FindStringSubmatch(body), idRE.FindStringSubmatch(body)
	if a == nil || i == nil {
		t.Fatalf("login page has no form:\n%s", body)
	}
	return loginForm{action: html.UnescapeString(a[1]), id: i[1], body: body}
}

// submit posts credentials and follows the redirects.
func (f loginForm) submit(t *testing.T, browser *http.Client, username, password string) (*http.Response, string) {
	t.Helper()
	resp, err := browser.PostForm(f.action, url.Values{
		"authRequestID": {f.id}, "username": {username}, "password": {password},
	})
	if err != nil {
		t.Fatalf("POST %s: %v", f.action, err)
	}
	return resp, readBody(t, resp)
}

// pkce is one authorization request's secrets.
type pkce struct {
	verifier, state, nonce string
}

func newPKCE() pkce {
	return pkce{verifier: oauth2.GenerateVerifier(), state: rand.Text(), nonce: rand.Text()}
}

func (k pkce) authURL(conf *oauth2.Config, opts ...oauth2.AuthCodeOption) string {
	opts = append(opts, oauth2.S256ChallengeOption(k.verifier), coreoidc.Nonce(k.nonce))
	return conf.AuthCodeURL(k.state, opts...)
}

// authorize runs the browser part of the code flow as alice and returns
// the code the client app received.
func (e *testEnv) authorize(t *testing.T, conf *oauth2.Config, k pkce) string {
	t.Helper()
	browser := newBrowser(t)
	form := openLoginForm(t, browser, k.authURL(conf))
	resp, body := form.submit(t, browser, "alice", alicePass)
	return callbackCode(t, e, resp, body, k.state)
}

// callbackCode checks that the flow ended at the client app's callback
// with the state, and returns the code.
func callbackCode(t *testing.T, e *testEnv, resp *http.Response, body, state string) string {
	t.Helper()
	got := resp.Request.URL
	if resp.StatusCode != http.StatusOK || body != "callback ok" || got.Scheme+"://"+got.Host+got.Path != e.callback {
		t.Fatalf("login ended at %s with %s, want %s; body:\n%s", got, resp.Status, e.callback, body)
	}
	q := got.Query()
	if q.Get("state") != state {
		t.Errorf("callback state = %q, want %q", q.Get("state"), state)
	}
	if q.Get("code") == "" {
		t.Fatalf("callback has no code: %s", got)
	}
	return q.Get("code")
}

// jwtPart decodes the header (0) or the payload (1) of a JWT.
func jwtPart(t *testing.T, token string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("decode JWT part %d: %v", i, err)
	}
	m := make(map[string]any)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal JWT part %d: %v", i, err)
	}
	return m
}

// retrieveErrorCode returns the OAuth error code of a failed token
// request, or "" if err is not one.
func retrieveErrorCode(err error) string {
	if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok {
		return re.ErrorCode
	}
	return ""
}
