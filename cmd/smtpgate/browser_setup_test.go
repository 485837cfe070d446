package main

import (
	"archive/zip"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserSetupPages signs in in headless Chromium and walks what a
// person setting up Thunderbird sees: the setup index, the Thunderbird
// page with its add-on link and policy, the add-on itself, and the token
// checker on a real and a refused token.
func TestBrowserSetupPages(t *testing.T) {
	e := startAppTokenEnv(t, "autoconfig: {domains: [example.com]}", "thunderbird: {client_id: thunderbird}")
	b := newBrowser(t)
	web := e.web

	b.load("open the setup index signed out", e.issuer+"/login", 200, chromedp.Navigate(web+"/setup"))
	b.do("fill the login form",
		chromedp.SendKeys(chromedp.ID("username"), "alice"),
		chromedp.SendKeys(chromedp.ID("password"), alicePassword),
	)
	b.load("submit the login form", web+"/setup", 200, chromedp.Click(chromedp.CSS(`form button[type=submit]`)))
	if got := b.text("ul.clients"); !strings.Contains(got, "Thunderbird") || !strings.Contains(got, "Apple Mail") || !strings.Contains(got, "Printers") {
		t.Errorf("setup index lists %q", got)
	}
	b.screenshot("setup-1-index")

	b.load(`click "Thunderbird"`, web+"/setup/thunderbird", 200, chromedp.Click(chromedp.CSS(`ul.clients a[href="/setup/thunderbird"]`)))
	if got := b.text("table.settings"); !strings.Contains(got, "Hostname gw.test") || !strings.Contains(got, "Authentication method OAuth2") || !strings.Contains(got, "Username "+aliceAddr) {
		t.Errorf("Thunderbird settings = %q", got)
	}
	if got := b.text("pre.config"); !strings.Contains(got, `"install_url": "`+web+`/setup/thunderbird/addon.xpi"`) || !strings.Contains(got, "force_installed") {
		t.Errorf("policies.json on the page = %q", got)
	}
	href := run1(b, "add-on link", chromedp.Evaluate[string](`document.querySelector('a.button[href$="addon.xpi"]').href`))
	b.screenshot("setup-2-thunderbird")
	resp, err := http.Get(href)
	if err != nil {
		t.Fatal(err)
	}
	xpi, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, err := zip.NewReader(bytes.NewReader(xpi), int64(len(xpi))); resp.StatusCode != 200 || err != nil {
		t.Errorf("GET %s = %s, zip: %v", href, resp.Status, err)
	}

	// The token checker, on a token the provider minted and a bad one.
	tok, err := e.idp.AccessToken("alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	b.load("open the token checker", web+"/debug/token", 200, chromedp.Navigate(web+"/debug/token"))
	b.do("paste a token", chromedp.SendKeys(chromedp.ID("token"), tok))
	b.load(`click "Check"`, web+"/debug/token", 200, chromedp.Click(chromedp.CSS(`form[action="/debug/token"] button`)))
	if got := b.text("main h2"); got != "Accepted" {
		t.Errorf("token checker on a good token says %q", got)
	}
	if got := b.text("main"); !strings.Contains(got, "may send as "+aliceAddr) || strings.Contains(got, tok) {
		t.Errorf("token checker page = %q", got)
	}
	b.screenshot("setup-3-token-accepted")
	b.do("paste a forged token", chromedp.SendKeys(chromedp.ID("token"), tok[:len(tok)-6]+"AAAAAA"))
	b.load(`click "Check"`, web+"/debug/token", 200, chromedp.Click(chromedp.CSS(`form[action="/debug/token"] button`)))
	if got := b.text("main h2"); got != "Refused" {
		t.Errorf("token checker on a forged token says %q", got)
	}
	if got := b.text("tr.fail"); !strings.HasPrefix(got, "signature failed") {
		t.Errorf("the failed check is %q, want the signature", got)
	}
	b.screenshot("setup-4-token-refused")
}
