package main

import (
	"archive/zip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/oidc/devprovider"
)

// startThunderbirdIdP runs a development provider with alice (password
// "pw", alias team@example.com) and Thunderbird's public client, and
// returns its issuer URL.
func startThunderbirdIdP(t *testing.T) string {
	t.Helper()
	idpSrv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + idpSrv.Listener.Addr().String()
	p, err := devprovider.New(devprovider.Config{
		Issuer: issuer,
		Users: []devprovider.User{{Username: "alice", Password: "pw", Email: "alice@example.com", EmailVerified: true,
			Aliases: []string{"team@example.com"}}},
		Clients:       []devprovider.Client{{ID: "thunderbird", RedirectURIs: []string{"http://localhost"}}},
		AllowInsecure: true,
		Logger:        slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	idpSrv.Config.Handler = p.Handler()
	idpSrv.Start()
	t.Cleanup(idpSrv.Close)
	return issuer
}

// TestThunderbirdOAuthWithAddon does what Thunderbird does with the
// generated add-on and nothing else: it reads oauth_provider from the
// .xpi, runs the authorization code flow with PKCE at those endpoints
// (signing in at the development provider's form), takes the token
// response apart as Thunderbird does (it needs expires_in and a refresh
// token), sends through smtpgate to postfix with XOAUTH2, and after a
// "restart" sends again with a refreshed token, no sign-in.
func TestThunderbirdOAuthWithAddon(t *testing.T) {
	pfAddr, _, _, maildir := postfixEnv(t)
	issuer := startThunderbirdIdP(t)
	gw := startGateway(t, issuer, "upstream: {addr: "+pfAddr+", tls: none}\nautoconfig: {domains: [example.com]}\nthunderbird: {client_id: thunderbird}")

	// The add-on, as the admin builds it.
	xpi := filepath.Join(t.TempDir(), "addon.xpi")
	if err := run(t.Context(), []string{"thunderbird-addon", "-config", filepath.Join(gw.dir, "smtpgate.yaml"), "-o", xpi}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	z, err := zip.OpenReader(xpi)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	f, err := z.Open("manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		OAuthProvider struct {
			Issuer                string   `json:"issuer"`
			ClientID              string   `json:"clientId"`
			AuthorizationEndpoint string   `json:"authorizationEndpoint"`
			TokenEndpoint         string   `json:"tokenEndpoint"`
			RedirectionEndpoint   string   `json:"redirectionEndpoint"`
			UsePKCE               bool     `json:"usePKCE"`
			Hostnames             []string `json:"hostnames"`
			Scopes                string   `json:"scopes"`
		} `json:"oauth_provider"`
	}
	if err := json.NewDecoder(f).Decode(&m); err != nil {
		t.Fatal(err)
	}
	op := m.OAuthProvider
	// Thunderbird picks the provider by the SMTP server's host name.
	if !strings.Contains(strings.Join(op.Hostnames, " "), "gw.test") || !op.UsePKCE {
		t.Fatalf("oauth_provider %+v does not cover gw.test with PKCE", op)
	}

	// The sign-in, as Thunderbird's window runs it (OAuth2.sys.mjs).
	verifier := rand.Text() + rand.Text()
	sum := sha256.Sum256([]byte(verifier))
	state := rand.Text()
	q := url.Values{
		"response_type": {"code"}, "client_id": {op.ClientID}, "redirect_uri": {op.RedirectionEndpoint},
		"scope": {op.Scopes}, "state": {state}, "login_hint": {"alice@example.com"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if r.URL.Hostname() == "localhost" { // Thunderbird catches the redirect here
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := browser.Get(op.AuthorizationEndpoint + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	action := regexp.MustCompile(`<form method="post" action="([^"]+)">`).FindSubmatch(body)
	id := regexp.MustCompile(`name="authRequestID" value="([^"]+)"`).FindSubmatch(body)
	if action == nil || id == nil {
		t.Fatalf("no login form at the authorization endpoint:\n%s", body)
	}
	resp, err = browser.PostForm(html.UnescapeString(string(action[1])), url.Values{"authRequestID": {string(id[1])}, "username": {"alice"}, "password": {"pw"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Hostname() != "localhost" || loc.Query().Get("state") != state || loc.Query().Get("code") == "" {
		t.Fatalf("sign-in ended with %s, Location %q; want a code for http://localhost", resp.Status, resp.Header.Get("Location"))
	}
	token := func(form url.Values) (access, refresh string) {
		t.Helper()
		resp, err := http.PostForm(op.TokenEndpoint, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tr struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
			ExpiresIn    int    `json:"expires_in"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != 200 {
			t.Fatalf("token endpoint: %s %v", resp.Status, err)
		}
		if tr.AccessToken == "" || tr.RefreshToken == "" || tr.ExpiresIn <= 0 {
			t.Fatalf("token response lacks what Thunderbird needs: %+v", tr)
		}
		return tr.AccessToken, tr.RefreshToken
	}
	access, refresh := token(url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {op.RedirectionEndpoint}, "client_id": {op.ClientID}, "code_verifier": {verifier}})

	send := func(access string) {
		t.Helper()
		c := dialWire(t, gw.submission)
		c.cmd("EHLO [127.0.0.1]", 250)
		c.starttls(gw.caFile)
		c.cmd("EHLO [127.0.0.1]", 250)
		c.cmd("AUTH XOAUTH2 "+base64.StdEncoding.EncodeToString([]byte("user=alice@example.com\x01auth=Bearer "+access+"\x01\x01")), 235)
		msgID, msg := testMessage(t, "team@example.com", "bob@example.test")
		c.sendMessage("team@example.com", "bob@example.test", msg)
		c.cmd("QUIT", 221)
		checkDelivery(t, delivered(t, maildir, msgID), msg, "ESMTPSA")
	}
	send(access)
	// After a restart Thunderbird has only the refresh token.
	access2, _ := token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {op.ClientID}})
	if access2 == access {
		t.Error("the refreshed access token is the old one")
	}
	send(access2)
}
