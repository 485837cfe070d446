package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/smtpgate/smtpgate/oidc/devprovider"
	"github.com/smtpgate/smtpgate/store"
)

// The people and the client the app-token tests sign in with.
const (
	webClientID     = "smtpgate-web"
	webClientSecret = "smtpgate-web-secret"
	alicePassword   = "alice-password"
	aliceAddr       = "alice@example.com"
	teamAddr        = "team@example.com" // alice's alias
	bobAddr         = "bob@example.test" // delivered by postfix
)

var tokenPattern = regexp.MustCompile(`^smtpgate_[0-9A-Za-z]{50}$`)

// An appTokenEnv is smtpgate serving SMTP and its web app, with app tokens
// in SQLite, signing people in at a devprovider, relaying to postfix.
type appTokenEnv struct {
	gw      *gatewayProc
	web     string // the web app's base URL
	issuer  string
	config  string // the config file, for the token subcommands
	db      string // the SQLite file
	maildir string
	idp     *devprovider.Provider
}

// startAppTokenEnv starts a devprovider with alice (and her alias
// team@example.com) and the web app's client, then serve with a store, a
// token key and the web app.
func startAppTokenEnv(t *testing.T, more ...string) *appTokenEnv {
	t.Helper()
	pfAddr, _, _, maildir := postfixEnv(t)

	// The web app's base URL goes into the provider's client and the
	// config before it listens: take a free port and give it back. Another
	// process could take it in between; on loopback in a test that is rare.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	webAddr := l.Addr().String()
	l.Close()
	webURL := "http://" + webAddr

	// httptest binds 127.0.0.1:0 before the provider exists, so its issuer
	// URL, which must be in Config, is known without a second race.
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String()
	p, err := devprovider.New(devprovider.Config{
		Issuer: issuer,
		Users: []devprovider.User{{
			Subject: "u-alice", Username: "alice", Password: alicePassword,
			Email: aliceAddr, EmailVerified: true, Name: "Alice Liddell",
			Aliases: []string{teamAddr},
		}},
		Clients: []devprovider.Client{{
			ID: webClientID, Secret: webClientSecret, RedirectURIs: []string{webURL + "/auth/callback"},
			PostLogoutRedirectURIs: []string{webURL + "/"},
		}},
		AllowInsecure: true,
		SSO:           true,
		Logger:        slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatalf("devprovider.New: %v", err)
	}
	srv.Config.Handler = p.Handler()
	srv.Start()
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	secretFile := filepath.Join(dir, "web-client-secret")
	writeFile(t, secretFile, webClientSecret+"\n", 0o600)
	// The audience is devprovider's default, smtp-gateway, as testissuer's.
	extra := fmt.Sprintf(`upstream: {addr: %s, tls: none}
store: {driver: sqlite, dsn: %s}
tokens: {key_file: %s}
web: {listen: %s, base_url: %s, client_id: %s, client_secret_file: %s}`,
		pfAddr, filepath.Join(dir, "smtpgate.db"), filepath.Join(dir, "token.key"),
		webAddr, webURL, webClientID, secretFile)
	for _, m := range more {
		extra += "\n" + m
	}
	gw := startGateway(t, issuer, extra)
	return &appTokenEnv{gw: gw, web: webURL, issuer: issuer, config: filepath.Join(gw.dir, "smtpgate.yaml"), db: filepath.Join(dir, "smtpgate.db"), maildir: maildir, idp: p}
}

// A browser is one headless Chromium tab.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string // where screenshots go
}

const browserStepTimeout = 15 * time.Second

// newBrowser starts Chromium with a fresh profile. Everything it does ends
// within the test's deadline of 50s; each step has its own 15s.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	requireTool(t, "chromium")
	const chromium = "/usr/bin/chromium"
	// Only these flags, not chromedp.DefaultExecAllocatorOptions. chromedp
	// adds --remote-debugging-pipe and about:blank; Debian's wrapper script
	// adds the flags of /etc/chromium.d. Chromium opens only loopback
	// connections.
	out, err := os.Create(filepath.Join(t.TempDir(), "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(out),
	)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		bcancel()
		acancel()
		cancel()
		out.Close()
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			var lines []string
			for l := range strings.Lines(string(b)) {
				if !strings.Contains(l, "dbus") { // no D-Bus here; Chromium says so a lot
					lines = append(lines, l)
				}
			}
			t.Logf("chromium output:\n%s", strings.Join(lines[max(0, len(lines)-40):], ""))
		}
	})
	// The first action starts the browser and binds it to ctx.
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1024, 768)); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	return &browser{t: t, ctx: bctx, shots: t.TempDir()}
}

// do runs steps that return nothing; what names them in the failure.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fatalf("%s: %v", what, err)
	}
}

// load runs steps that lead to a page, such as a click on a submit
// button, waits for the page and checks that it is at path with status.
func (b *browser) load(what string, path string, status int64, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		b.fatalf("%s: %v", what, err)
	}
	if resp == nil {
		b.fatalf("%s: no page loaded", what)
	}
	// The path, not the query: the provider's login form has its request id.
	if u, _, _ := strings.Cut(resp.URL, "?"); u != path || resp.Status != status {
		b.fatalf("%s: loaded %s with status %d, want %s with %d", what, resp.URL, resp.Status, path, status)
	}
}

func run1[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fatalf("%s: %v", what, err)
	}
	return v
}

// text is the rendered text of the first element sel matches, with runs
// of white space made one space.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return strings.Join(strings.Fields(run1(b, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))), " ")
}

// screenshot saves the whole page as name.png in the test's temporary
// directory and, if SMTPGATE_SCREENSHOTS names a directory, there too.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png := run1(b, "screenshot "+name, chromedp.FullScreenshot(100))
	dirs := []string{b.shots}
	if d := os.Getenv("SMTPGATE_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name+".png")
		writeFile(b.t, p, string(png), 0o644)
		b.t.Logf("screenshot %s", p)
	}
}

// fatalf stops the test, with what the page showed.
func (b *browser) fatalf(format string, args ...any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err == nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		b.t.Logf("the browser is at %s, showing:\n%s", loc, body)
	}
	b.t.Fatalf(format, args...)
}

// TestBrowserAppTokens signs in to the web app in headless Chromium,
// creates an app token, sends mail with it from swaks (PLAIN) and Python
// (LOGIN), sees its use on the page, revokes it there and signs out.
func TestBrowserAppTokens(t *testing.T) {
	swaks := requireTool(t, "swaks")
	requireTool(t, "python3")
	e := startAppTokenEnv(t)
	b := newBrowser(t)
	web := e.web

	// Sign in at the provider's login form.
	b.load("open the start page", web+"/", 200, chromedp.Navigate(web+"/"))
	b.load(`click "Sign in"`, e.issuer+"/login", 200, chromedp.Click(chromedp.CSS(`main a[href="/login"]`)))
	b.do("fill the login form",
		chromedp.SendKeys(chromedp.ID("username"), "alice"),
		chromedp.SendKeys(chromedp.ID("password"), alicePassword),
	)
	b.load("submit the login form", web+"/tokens", 200, chromedp.Click(chromedp.CSS(`form button[type=submit]`)))
	if got := b.text("main"); !strings.Contains(got, "You have no app tokens yet.") {
		t.Fatalf("/tokens after sign-in shows %q, want no tokens yet", got)
	}
	if got := b.text("header nav"); !strings.Contains(got, "Signed in as "+aliceAddr) {
		t.Errorf("header = %q, want signed in as %s", got, aliceAddr)
	}

	// The form: label, the default lifetime, both addresses.
	if got := run1(b, "expiry", chromedp.Value(chromedp.ID("days"))); got != "90" {
		t.Errorf("default expiry = %q days, want 90", got)
	}
	senders := run1(b, "sender checkboxes", chromedp.Evaluate[map[string]bool](
		`Object.fromEntries([...document.querySelectorAll('input[name=sender]')].map(c => [c.value, c.checked]))`))
	if want := map[string]bool{aliceAddr: true, teamAddr: false}; !maps.Equal(senders, want) {
		// Without the alias the rest of the test cannot run.
		b.fatalf("sender checkboxes (address: checked) = %v, want %v", senders, want)
	}
	b.do("fill the new token form",
		chromedp.SendKeys(chromedp.ID("label"), "iPhone Mail"),
		chromedp.Click(chromedp.CSS(`input[name=sender][value="`+teamAddr+`"]`)),
	)
	before := time.Now()
	b.load(`click "Continue"`, web+"/tokens/new", 200, chromedp.Click(chromedp.CSS(`form[action="/tokens/new"] button[type=submit]`)))
	after := time.Now()

	// The consent page says what the token will be allowed to do.
	consent := b.text("p.consent")
	var ok bool
	for _, now := range []time.Time{before, after} { // the date may turn over between them
		day := now.Add(90 * 24 * time.Hour).UTC().Format("2006-01-02")
		ok = ok || consent == "iPhone Mail may send mail as "+aliceAddr+", "+teamAddr+" through gw.test until "+day+"."
	}
	if !ok {
		t.Errorf("consent = %q, want the label, both addresses, gw.test and the date 90 days from now", consent)
	}
	b.screenshot("1-consent")
	b.load(`click "Create token"`, web+"/tokens/confirm", 200, chromedp.Click(chromedp.CSS(`form[action="/tokens/confirm"] button[type=submit]`)))
	token := run1(b, "token field", chromedp.Value(chromedp.ID("token")))
	if !tokenPattern.MatchString(token) {
		b.fatalf("#token = %q, want %s", token, tokenPattern)
	}
	if got := b.text("table.settings"); !strings.Contains(got, "Username "+aliceAddr) || !strings.Contains(got, "Outgoing server (SMTP) gw.test") {
		t.Errorf("settings table = %q, want server gw.test and username %s", got, aliceAddr)
	}
	b.screenshot("2-created")
	id, _, err := store.ParseToken("smtpgate", token)
	if err != nil {
		t.Fatalf("store.ParseToken(token from the page): %v", err)
	}
	row := "#token-" + id

	// swaks: AUTH PLAIN after STARTTLS, as alice.
	host, port, _ := strings.Cut(e.gw.submission, ":")
	msgID, msg := testMessage(t, aliceAddr, bobAddr)
	out, err := runClient(t, msg, swaks, "--server", host, "--port", port,
		"--tls", "--tls-verify", "--tls-ca-path", e.gw.caFile,
		"--auth", "PLAIN", "--auth-user", aliceAddr, "--auth-password", token,
		"--from", aliceAddr, "--to", bobAddr, "--data", "-")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if !strings.Contains(out, "~> AUTH PLAIN ") || !strings.Contains(out, "<~  235 ") {
		t.Errorf("swaks did not authenticate with PLAIN after STARTTLS:\n%s", out)
	}
	// swaks ends the data with an empty line of its own, so only check
	// that the message came through smtpgate.
	if got := delivered(t, e.maildir, msgID); !strings.Contains(got, "(smtpgate) with ESMTPSA id ") {
		t.Errorf("swaks' message has no smtpgate Received header with ESMTPSA:\n%s", got)
	}

	// Python smtplib: AUTH LOGIN, sending as the alias.
	msgID, msg = testMessage(t, teamAddr, bobAddr)
	if out := sendPassword(t, e.gw, "LOGIN", aliceAddr, token, teamAddr, bobAddr, msg); out != "auth 235\nsent\n" {
		t.Errorf("python3 AUTH LOGIN and send as %s: %q, want auth 235 and sent", teamAddr, out)
	}
	checkDelivery(t, delivered(t, e.maildir, msgID), msg, "ESMTPSA")

	// The list shows the uses, flushed to the database or not.
	b.load("reload /tokens", web+"/tokens", 200, chromedp.Navigate(web+"/tokens"))
	if got := b.text(row + " td.label"); got != "iPhone Mail" {
		t.Errorf("row label = %q, want iPhone Mail", got)
	}
	if got := b.text(row + " td:nth-child(2)"); got != aliceAddr+", "+teamAddr {
		t.Errorf("row senders = %q, want %s, %s", got, aliceAddr, teamAddr)
	}
	if got := b.text(row + " td:nth-child(5)"); !regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d UTC from 127\.0\.0\.1$`).MatchString(got) {
		t.Errorf("row last used = %q, want a time from 127.0.0.1", got)
	}
	if got := b.text(row + " td:nth-child(6)"); got != "2" {
		t.Errorf("row uses = %q, want 2", got)
	}
	if got := b.text(row + " td.status"); got != "active" {
		t.Errorf("row status = %q, want active", got)
	}
	b.screenshot("3-tokens-used")

	// Revoke it on the page: it stops working at once.
	b.load("click Revoke", web+"/tokens", 200, chromedp.Click(chromedp.CSS(row+` button[aria-label="Revoke iPhone Mail"]`)))
	if got := b.text(row + " td.status"); got != "revoked" {
		t.Errorf("row status after Revoke = %q, want revoked", got)
	}
	if n := run1(b, "revoke buttons", chromedp.Evaluate[int](`document.querySelectorAll('tr[id^="token-"] button').length`)); n != 0 {
		t.Errorf("%d revoke buttons after revoking the only token, want 0", n)
	}
	b.screenshot("4-tokens-revoked")
	msgID, msg = testMessage(t, aliceAddr, bobAddr)
	if out := sendPassword(t, e.gw, "PLAIN", aliceAddr, token, aliceAddr, bobAddr, msg); out != "auth 535\n" {
		t.Errorf("python3 AUTH PLAIN with the revoked token: %q, want auth 535", out)
	}
	notDelivered(t, e.maildir, msgID)

	// Keep a copy of the session cookie, as someone at this computer could.
	cookies := run1(b, "read the cookies", func(ctx context.Context, tg *chromedp.Target) ([]*network.Cookie, error) {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{web + "/"}})
		return res.Cookies, err
	})
	var copied *network.Cookie
	for _, c := range cookies {
		if c.Name == "smtpgate-session" {
			copied = c
		}
	}
	if copied == nil {
		b.fatalf("no session cookie among %d cookies", len(cookies))
	}

	// Sign out: through the provider's end_session_endpoint back to the
	// start page; the token list is gone with the session.
	b.load(`click "Sign out"`, web+"/", 200, chromedp.Click(chromedp.CSS(`header form[action="/logout"] button`)))
	b.load("open /tokens signed out", web+"/", 200, chromedp.Navigate(web+"/tokens"))
	if got := b.text("body"); strings.Contains(got, "Signed in as") || !strings.Contains(got, "Sign in") {
		t.Errorf("start page after sign-out = %q, want a Sign in link and nobody signed in", got)
	}

	// The copied cookie, put back, opens nothing: the session record is gone.
	b.do("put the copied session cookie back", func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, network.SetCookie, network.SetCookieParams{Name: copied.Name, Value: copied.Value, URL: web + "/"})
		return chromedp.Void{}, err
	})
	b.load("open /tokens with the replayed cookie", web+"/", 200, chromedp.Navigate(web+"/tokens"))
	if got := b.text("body"); strings.Contains(got, "Signed in as") {
		t.Errorf("the replayed cookie signed the browser in: %q", got)
	}
	// The provider's session ended too: "Sign in" asks for the password.
	b.load(`click "Sign in" after signing out`, e.issuer+"/login", 200, chromedp.Click(chromedp.CSS(`main a[href="/login"]`)))
	if n := run1(b, "password fields", chromedp.Evaluate[int](`document.querySelectorAll('input[type=password]').length`)); n != 1 {
		t.Errorf("after sign-out the provider shows %d password fields, want its login form", n)
	}
	b.screenshot("5-signed-out-provider-asks")
}

// TestAppTokenCLI administers app tokens with "smtpgate token" while serve
// runs on the same database.
func TestAppTokenCLI(t *testing.T) {
	requireTool(t, "python3")
	e := startAppTokenEnv(t)
	token := func(args ...string) (stdout, stderr string) {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append([]string{"token", args[0], "-config", e.config}, args[1:]...)
		if err := run(t.Context(), args, &out, &errOut); err != nil {
			t.Fatalf("smtpgate %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return out.String(), errOut.String()
	}
	create := func(label string) (secret, id string) {
		t.Helper()
		out, info := token("create", "-user", aliceAddr, "-label", label, "-expires", "7d")
		secret = strings.TrimSuffix(out, "\n")
		if !tokenPattern.MatchString(secret) {
			t.Fatalf("token create printed %q, want a token", out)
		}
		id, _, err := store.ParseToken("smtpgate", secret)
		if err != nil {
			t.Fatal(err)
		}
		expires := time.Now().Add(7 * 24 * time.Hour).UTC().Format("2006-01-02")
		if want := "\ncreated token " + id + " for " + aliceAddr + ", may send as " + aliceAddr + ", expires " + expires; !strings.Contains(info, want) {
			t.Errorf("token create said %q, want %q", info, want)
		}
		// It names the database it worked on, and logs an audit line
		// with who and which token, never the secret.
		if want := "store: sqlite " + e.db + "\n"; !strings.HasPrefix(info, want) {
			t.Errorf("token create said %q, want it to start %q", info, want)
		}
		if !strings.Contains(info, `msg="audit: token created" by=cli:`) || !strings.Contains(info, "id="+id) || strings.Contains(info, secret) {
			t.Errorf("token create's audit line is missing or holds the secret: %q", info)
		}
		return secret, id
	}

	printer, id := create("printer")
	msgID, msg := testMessage(t, aliceAddr, bobAddr)
	if out := sendPassword(t, e.gw, "PLAIN", aliceAddr, printer, aliceAddr, bobAddr, msg); out != "auth 235\nsent\n" {
		t.Fatalf("python3 AUTH PLAIN with the new token: %q, want auth 235 and sent", out)
	}
	checkDelivery(t, delivered(t, e.maildir, msgID), msg, "ESMTPSA")

	// serve has the use in memory, not yet in the database the CLI reads,
	// so the list shows the token and not necessarily its use.
	out, _ := token("list", "-user", aliceAddr)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") {
		t.Fatalf("token list = %q, want a header and one token", out)
	}
	f := strings.Fields(lines[1])
	if len(f) < 8 || f[0] != id || f[1] != aliceAddr || f[2] != `"printer"` || f[3] != aliceAddr || f[len(f)-1] != "active" {
		t.Errorf("token list row = %q, want %s, %s, \"printer\", %s … active", lines[1], id, aliceAddr, aliceAddr)
	}

	if out, _ := token("revoke", id); out != "revoked "+id+"\n" {
		t.Errorf("token revoke %s said %q", id, out)
	}
	if out := sendPassword(t, e.gw, "PLAIN", aliceAddr, printer, aliceAddr, bobAddr, msg); out != "auth 535\n" {
		t.Errorf("python3 AUTH PLAIN after token revoke: %q, want auth 535", out)
	}
	if out, _ := token("list", "-user", aliceAddr); !strings.Contains(out, " revoked\n") {
		t.Errorf("token list after revoke = %q, want the token revoked", out)
	}

	// revoke -all counts the live tokens only.
	scanner, _ := create("scanner")
	if out, _ := token("revoke", "-user", aliceAddr, "-all"); out != "revoked 1 live token(s) of "+aliceAddr+"\n" {
		t.Errorf("token revoke -all said %q, want 1 token revoked", out)
	}
	if out := sendPassword(t, e.gw, "PLAIN", aliceAddr, scanner, aliceAddr, bobAddr, msg); out != "auth 535\n" {
		t.Errorf("python3 AUTH PLAIN after token revoke -all: %q, want auth 535", out)
	}
}

// pythonPassword authenticates with PLAIN or LOGIN after STARTTLS and, if
// that succeeds, sends the message. It prints "auth CODE", then "sent".
const pythonPassword = `
import smtplib, ssl, sys
host, port, ca, mech, user, password, sender, rcpt = sys.argv[1:9]
msg = sys.stdin.buffer.read()
s = smtplib.SMTP(host, int(port), timeout=20)
s.starttls(context=ssl.create_default_context(cafile=ca))
s.ehlo("python.test")
s.user, s.password = user, password
# PLAIN with the initial response; LOGIN as a dialog, Username: then
# Password:, as most mail programs do it.
obj = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login}[mech]
try:
    code, _ = s.auth(mech, obj, initial_response_ok=(mech == "PLAIN"))
except smtplib.SMTPAuthenticationError as e:
    code = e.smtp_code
print("auth", code)
if code == 235:
    s.sendmail(sender, [rcpt], msg)
    print("sent")
s.quit()
`

// sendPassword runs pythonPassword and returns what it printed.
func sendPassword(t *testing.T, gw *gatewayProc, mech, user, password, from, to, msg string) string {
	t.Helper()
	host, port, _ := strings.Cut(gw.submission, ":")
	out, err := runClient(t, msg, requireTool(t, "python3"), "-c", pythonPassword,
		host, port, gw.caFile, mech, user, password, from, to)
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	return out
}
