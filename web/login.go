package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"time"

	coreoidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/smtpgate/smtpgate/oidc"
)

// A signIn is what the session cookie holds about the person signed in.
type signIn struct {
	Subject   string   `json:"sub"` // "iss#sub"
	Name      string   `json:"name,omitempty"`
	Addresses []string `json:"addrs"` // the mailbox first, then aliases
	AuthTime  int64    `json:"auth"`  // when they signed in at the provider
}

func (s *signIn) mailbox() string { return strings.ToLower(s.Addresses[0]) }

// A pendingLogin is what the login cookie holds between /login and the
// callback: the values the callback must see again.
type pendingLogin struct {
	State    string `json:"state"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	Return   string `json:"return"`
}

// returnPaths are the only places a sign-in may lead back to: nothing a
// parameter says can redirect elsewhere.
var returnPaths = map[string]bool{"/tokens": true, "/setup": true}

func (a *app) login(w http.ResponseWriter, r *http.Request) {
	cfg, _, err := a.oauth(r.Context())
	if err != nil {
		a.log.Warn("web: identity provider unavailable", "err", err)
		a.fail(w, r, http.StatusServiceUnavailable, "The sign-in service cannot be reached right now. Please try again in a minute.")
		return
	}
	p := pendingLogin{State: rand.Text(), Nonce: rand.Text(), Verifier: oauth2.GenerateVerifier(), Return: "/tokens"}
	if ret := r.URL.Query().Get("return"); returnPaths[ret] {
		p.Return = ret
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(p.Verifier), coreoidc.Nonce(p.Nonce)}
	if r.URL.Query().Get("reauth") != "" {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "login"), oauth2.SetAuthURLParam("max_age", "0"))
		var s signIn
		if a.readCookie(r, a.sessionCookie(), &s) == nil {
			opts = append(opts, oauth2.SetAuthURLParam("login_hint", s.Addresses[0]))
		}
	}
	if err := a.setCookie(w, a.loginCookie(), p, a.cfg.Now().Add(10*time.Minute)); err != nil {
		a.fail(w, r, http.StatusInternalServerError, "Something went wrong.")
		return
	}
	http.Redirect(w, r, cfg.AuthCodeURL(p.State, opts...), http.StatusFound)
}

func (a *app) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var p pendingLogin
	err := a.readCookie(r, a.loginCookie(), &p)
	// The pending login is used once: a replayed callback finds nothing.
	a.clearCookie(w, a.loginCookie())
	if e := q.Get("error"); e != "" {
		a.log.Info("web: sign-in refused by the provider", "error", e, "description", q.Get("error_description"))
		a.fail(w, r, http.StatusForbidden, "The sign-in service said: "+e+". "+q.Get("error_description"))
		return
	}
	if err != nil || subtle.ConstantTimeCompare([]byte(p.State), []byte(q.Get("state"))) != 1 || p.State == "" {
		a.log.Info("web: callback with a missing or wrong state", "remote", r.RemoteAddr)
		a.fail(w, r, http.StatusBadRequest, "This sign-in link is no longer valid (it expired, was used already, or was started in another browser). Please sign in again.")
		return
	}
	ctx := coreoidc.ClientContext(r.Context(), a.cfg.HTTPClient)
	cfg, provider, err := a.oauth(ctx)
	if err != nil {
		a.fail(w, r, http.StatusServiceUnavailable, "The sign-in service cannot be reached right now. Please try again in a minute.")
		return
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(p.Verifier))
	if err != nil {
		a.log.Info("web: code exchange failed", "err", err)
		a.fail(w, r, http.StatusBadGateway, "The sign-in could not be completed. Please sign in again.")
		return
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&coreoidc.Config{ClientID: a.cfg.ClientID, Now: a.cfg.Now}).Verify(ctx, rawID)
	if err != nil || subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(p.Nonce)) != 1 {
		a.log.Info("web: ID token refused", "err", err)
		a.fail(w, r, http.StatusBadGateway, "The sign-in service sent an answer that could not be verified. Please sign in again.")
		return
	}
	var claims json.RawMessage
	idt.Claims(&claims)
	addrs, err := oidc.MailAddresses(claims, a.cfg.IdentityClaim, a.cfg.AliasesClaim)
	// Many providers put the mailbox or custom claims such as the aliases
	// only in UserInfo: ask it when the ID token falls short.
	if err != nil || (a.cfg.AliasesClaim != "" && !hasClaim(claims, a.cfg.AliasesClaim)) {
		if ui, uerr := provider.UserInfo(ctx, oauth2.StaticTokenSource(tok)); uerr == nil && ui.Subject == idt.Subject {
			var uc json.RawMessage
			ui.Claims(&uc)
			if ua, uerr := oidc.MailAddresses(uc, a.cfg.IdentityClaim, a.cfg.AliasesClaim); uerr == nil && (err != nil || len(ua) > len(addrs) && strings.EqualFold(ua[0], addrs[0])) {
				addrs, err = ua, nil
			}
		}
	}
	if err != nil {
		a.log.Info("web: no usable mailbox in the sign-in", "sub", idt.Subject, "err", err)
		a.fail(w, r, http.StatusForbidden, "Your account has no verified email address that this service can use.")
		return
	}
	var named struct {
		Name string `json:"name"`
	}
	json.Unmarshal(claims, &named)
	now := a.cfg.Now()
	s := signIn{Subject: idt.Issuer + "#" + idt.Subject, Name: named.Name, Addresses: addrs, AuthTime: now.Unix()}
	// A fresh cookie value on every sign-in: nothing from before carries over.
	if err := a.setCookie(w, a.sessionCookie(), s, now.Add(a.cfg.SessionTTL)); err != nil {
		a.fail(w, r, http.StatusInternalServerError, "Something went wrong.")
		return
	}
	a.log.Info("web: signed in", "subject", s.Subject, "address", addrs[0], "remote", remoteIP(r))
	http.Redirect(w, r, p.Return, http.StatusSeeOther)
}

// session returns who is signed in, if anyone.
func (a *app) session(r *http.Request) (*signIn, bool) {
	var s signIn
	if err := a.readCookie(r, a.sessionCookie(), &s); err != nil || len(s.Addresses) == 0 {
		return nil, false
	}
	return &s, true
}

func (a *app) logoutPage(w http.ResponseWriter, r *http.Request) {
	s, _ := a.session(r)
	a.render(w, r, http.StatusOK, "logout", page{Session: s})
}

func (a *app) logout(w http.ResponseWriter, r *http.Request) {
	a.clearCookie(w, a.sessionCookie())
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func hasClaim(raw json.RawMessage, name string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	_, ok := m[name]
	return ok
}

func remoteIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
