package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	coreoidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/smtpgate/smtpgate/mailaddr"
	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/store"
)

// A signIn is what the server-side session record holds about the person
// signed in. The cookie holds only the session's random ID.
type signIn struct {
	Subject   string   `json:"sub"` // "iss#sub"
	Name      string   `json:"name,omitempty"`
	Addresses []string `json:"addrs"` // the mailbox first, then aliases; lower-case
	// AuthTime is the ID token's auth_time: when the person last proved
	// who they are to the provider, not when our callback ran.
	AuthTime int64  `json:"auth"`
	ACR      string `json:"acr,omitempty"`
	IDToken  string `json:"idt,omitempty"` // for id_token_hint at the provider's end_session_endpoint

	SessionID string `json:"-"` // the store's session ID; set by session
}

// Mailbox returns the signed-in person's mailbox.
func (s *signIn) Mailbox() mailaddr.Address { return mailaddr.MustParse(s.Addresses[0]) }

func (s *signIn) mailbox() string { return s.Addresses[0] }

// sessionRef is what the session cookie holds.
type sessionRef struct {
	ID string `json:"sid"`
}

// A pendingLogin is what a login cookie holds between /login and the
// callback: the values the callback must see again. Each sign-in has its
// own cookie, named after its state, so sign-ins started in several tabs
// do not cancel each other.
type pendingLogin struct {
	State    string `json:"state"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	Return   string `json:"return"`
	Reauth   bool   `json:"reauth,omitempty"` // asked for max_age and prompt=login
}

// returnPaths are the only places a sign-in may lead back to: nothing a
// parameter says can redirect elsewhere.
var returnPaths = map[string]bool{"/tokens": true, "/setup": true}

// loginTTL bounds the time from /login to the callback.
const loginTTL = 10 * time.Minute

// authTimeSkew is how far in the future an auth_time may be, for clocks
// that disagree.
const authTimeSkew = time.Minute

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
	if a.cfg.RequiredACR != "" {
		opts = append(opts, oauth2.SetAuthURLParam("acr_values", a.cfg.RequiredACR))
	}
	if r.URL.Query().Get("reauth") != "" {
		// OpenID Connect Core 1.0 section 3.1.2.1: max_age makes the
		// provider re-authenticate a session older than that and put
		// auth_time in the ID token; prompt=login asks for it outright.
		// The callback checks that it was honoured.
		p.Reauth = true
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "login"),
			oauth2.SetAuthURLParam("max_age", strconv.Itoa(int(a.cfg.ReauthAge/time.Second))))
		if s, ok := a.session(r); ok {
			opts = append(opts, oauth2.SetAuthURLParam("login_hint", s.mailbox()))
		}
	}
	if err := a.setCookie(w, a.loginCookie(p.State), p, a.cfg.Now().Add(loginTTL)); err != nil {
		a.fail(w, r, http.StatusInternalServerError, "Something went wrong.")
		return
	}
	http.Redirect(w, r, cfg.AuthCodeURL(p.State, opts...), http.StatusFound)
}

// providerErrors are the fixed texts for the error codes of RFC 6749
// section 4.1.2.1 and OpenID Connect Core 1.0 section 3.1.2.6. The
// provider's error_description is never shown: anyone can put text in a
// callback URL.
var providerErrors = map[string]string{
	"access_denied":              "The sign-in was cancelled or refused.",
	"login_required":             "The sign-in service needs you to sign in.",
	"interaction_required":       "The sign-in service needs you to complete a step there.",
	"consent_required":           "The sign-in service needs your consent for this application.",
	"account_selection_required": "The sign-in service needs you to choose an account.",
	"temporarily_unavailable":    "The sign-in service is temporarily unavailable.",
	"server_error":               "The sign-in service had an internal error.",
	"invalid_request":            "The sign-in service refused the request.",
	"invalid_scope":              "The sign-in service refused the request.",
	"unauthorized_client":        "This application is not allowed to sign people in there.",
	"unsupported_response_type":  "The sign-in service refused the request.",
}

func (a *app) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	var p pendingLogin
	err := errBadCookie
	if validState(state) {
		err = a.readCookie(r, a.loginCookie(state), &p)
		// The pending login is used once: a replayed callback finds nothing.
		a.clearCookie(w, a.loginCookie(state))
	}
	if err != nil || p.State == "" || subtle.ConstantTimeCompare([]byte(p.State), []byte(state)) != 1 {
		a.log.Info("web: callback with a missing or wrong state", "remote", a.remoteIP(r))
		a.fail(w, r, http.StatusBadRequest, "This sign-in link is no longer valid (it expired, was used already, or was started in another browser). Please sign in again.")
		return
	}
	// Only now, with the state matched, is an error from the provider
	// worth showing, and only as one of the fixed texts.
	if e := q.Get("error"); e != "" {
		msg, known := providerErrors[e]
		if !known {
			msg = "The sign-in service refused the sign-in."
		}
		a.log.Info("web: sign-in refused by the provider", "error", truncate(e, 64), "known", known)
		a.fail(w, r, http.StatusForbidden, msg+" Please sign in again.")
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
	var std struct {
		Name     string  `json:"name"`
		AuthTime float64 `json:"auth_time"`
		ACR      string  `json:"acr"`
	}
	json.Unmarshal(claims, &std)
	now := a.cfg.Now()
	authTime := time.Unix(int64(std.AuthTime), 0)
	subject := idt.Issuer + "#" + idt.Subject
	switch {
	case std.AuthTime <= 0 || authTime.After(now.Add(authTimeSkew)):
		a.log.Warn("web: ID token without a usable auth_time", "subject", subject, "auth_time", std.AuthTime)
		a.fail(w, r, http.StatusBadGateway, "The sign-in service did not say when you signed in, so the sign-in cannot be trusted. Ask your administrator to make it send auth_time.")
		return
	case p.Reauth && now.Sub(authTime) > a.cfg.ReauthAge:
		// The provider ignored max_age and prompt=login (an SSO session
		// answered): this sign-in proves nothing new.
		a.log.Warn("web: the provider did not re-authenticate (max_age ignored)", "subject", subject, "auth_time", authTime.UTC(), "max_age", a.cfg.ReauthAge)
		a.fail(w, r, http.StatusForbidden, "The sign-in service did not ask for your password again, so no token can be created now. Sign out, then sign in again.")
		return
	case a.cfg.RequiredACR != "" && std.ACR != a.cfg.RequiredACR:
		a.log.Warn("web: sign-in without the required acr", "subject", subject, "acr", truncate(std.ACR, 64), "required", a.cfg.RequiredACR)
		a.fail(w, r, http.StatusForbidden, "This service needs a stronger sign-in (such as a second factor) than the one you used. Please sign in again with it.")
		return
	}
	addrs, err := oidc.MailAddresses(claims, a.cfg.IdentityClaim, a.cfg.AliasesClaim)
	// Many providers put the mailbox or custom claims such as the aliases
	// only in UserInfo: ask it when the ID token falls short.
	if err != nil || (a.cfg.AliasesClaim != "" && !hasClaim(claims, a.cfg.AliasesClaim)) {
		if ui, uerr := provider.UserInfo(ctx, oauth2.StaticTokenSource(tok)); uerr == nil && ui.Subject == idt.Subject {
			var uc json.RawMessage
			ui.Claims(&uc)
			if ua, uerr := oidc.MailAddresses(uc, a.cfg.IdentityClaim, a.cfg.AliasesClaim); uerr == nil && (err != nil || len(ua) > len(addrs) && ua[0] == addrs[0]) {
				addrs, err = ua, nil
			}
		}
	}
	if err != nil {
		a.log.Info("web: no usable mailbox in the sign-in", "sub", idt.Subject, "err", err)
		a.fail(w, r, http.StatusForbidden, "Your account has no verified email address that this service can use.")
		return
	}
	s := signIn{Subject: subject, Name: std.Name, Addresses: addrs, AuthTime: authTime.Unix(), ACR: std.ACR, IDToken: rawID}
	// A sign-in replaces the session this browser had, if any.
	if old, ok := a.session(r); ok {
		if err := a.cfg.Store.DeleteSession(r.Context(), old.SessionID); err != nil {
			a.log.Warn("web: end the replaced session", "err", err)
		}
	}
	if err := a.startSession(w, r, s); err != nil {
		a.log.Error("web: create session", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "Something went wrong. Please sign in again.")
		return
	}
	a.log.Info("web: signed in", "subject", s.Subject, "address", addrs[0], "auth_time", authTime.UTC(), "acr", std.ACR, "remote", a.remoteIP(r))
	http.Redirect(w, r, p.Return, http.StatusSeeOther)
}

// startSession stores a new session record and gives the browser its ID.
func (a *app) startSession(w http.ResponseWriter, r *http.Request, s signIn) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	exp := a.cfg.Now().Add(a.cfg.SessionTTL)
	sess, err := a.cfg.Store.CreateSession(r.Context(), store.Session{Subject: s.Subject, Mailbox: s.Mailbox(), Data: data, ExpiresAt: exp})
	if err != nil {
		return err
	}
	return a.setCookie(w, a.sessionCookie(), sessionRef{sess.ID}, exp)
}

// session returns who is signed in, if anyone: the cookie must name a
// session the store still has. After sign-out the cookie is worthless.
func (a *app) session(r *http.Request) (*signIn, bool) {
	var ref sessionRef
	if err := a.readCookie(r, a.sessionCookie(), &ref); err != nil || ref.ID == "" {
		return nil, false
	}
	sess, err := a.cfg.Store.Session(r.Context(), ref.ID)
	if err != nil {
		if !errors.Is(err, store.ErrNoSession) {
			a.log.Error("web: read session", "err", err)
		}
		return nil, false
	}
	var s signIn
	if err := json.Unmarshal(sess.Data, &s); err != nil || len(s.Addresses) == 0 || s.Subject != sess.Subject {
		a.log.Error("web: unreadable session record", "err", err)
		return nil, false
	}
	if _, err := mailaddr.Parse(s.Addresses[0]); err != nil {
		return nil, false
	}
	s.SessionID = sess.ID
	return &s, true
}

func (a *app) logoutPage(w http.ResponseWriter, r *http.Request) {
	s, _ := a.session(r)
	a.render(w, r, http.StatusOK, "logout", page{Session: s})
}

// logout ends this browser's session here and, when the provider has an
// end_session_endpoint, there too (RP-initiated logout), so the next
// "Sign in" on a shared computer asks for a password.
func (a *app) logout(w http.ResponseWriter, r *http.Request) {
	a.endSessions(w, r, false)
}

// logoutEverywhere ends every session of the person, in every browser.
func (a *app) logoutEverywhere(w http.ResponseWriter, r *http.Request) {
	a.endSessions(w, r, true)
}

func (a *app) endSessions(w http.ResponseWriter, r *http.Request, everywhere bool) {
	s, ok := a.session(r)
	a.clearCookie(w, a.sessionCookie())
	if !ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	var err error
	n := 1
	if everywhere {
		n, err = a.cfg.Store.DeleteSessionsOf(r.Context(), s.Subject)
	} else {
		err = a.cfg.Store.DeleteSession(r.Context(), s.SessionID)
	}
	if err != nil {
		a.log.Error("web: end session", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "You could not be signed out. Please try again.")
		return
	}
	a.log.Info("web: signed out", "subject", s.Subject, "sessions", n, "everywhere", everywhere, "remote", a.remoteIP(r))
	http.Redirect(w, r, a.endSessionURL(r.Context(), s), http.StatusSeeOther)
}

// endSessionURL is the provider's end_session_endpoint with the ID token
// as hint (OpenID Connect RP-Initiated Logout 1.0), or "/" without one.
func (a *app) endSessionURL(ctx context.Context, s *signIn) string {
	_, provider, err := a.oauth(ctx)
	if err != nil {
		return "/"
	}
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if provider.Claims(&meta) != nil || meta.EndSession == "" {
		return "/"
	}
	u, err := url.Parse(meta.EndSession)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return "/"
	}
	v := u.Query()
	v.Set("client_id", a.cfg.ClientID)
	v.Set("post_logout_redirect_uri", a.cfg.BaseURL+"/")
	if s.IDToken != "" {
		v.Set("id_token_hint", s.IDToken)
	}
	u.RawQuery = v.Encode()
	return u.String()
}

// validState reports whether s can be part of a cookie name: our states
// are rand.Text, base32.
func validState(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !('A' <= c && c <= 'Z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func hasClaim(raw json.RawMessage, name string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	_, ok := m[name]
	return ok
}
