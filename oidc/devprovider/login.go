package devprovider

import (
	"bytes"
	_ "embed"
	"errors"
	"net/http"
	"net/url"
	"strings"
)

//go:embed login.html
var loginHTML string

// maxLoginForm bounds the body of a login POST.
const maxLoginForm = 64 << 10

// loginData fills login.html: the form when Form is set, else a message.
type loginData struct {
	Form     bool
	Action   string // where the form posts
	ID       string // auth request ID, the hidden field
	ClientID string
	Username string
	Error    string
	Title    string
	Message  string
}

// serveLoginForm shows the form for the auth request named in the query.
// zitadel's /authorize redirects here (client.LoginURL).
func (p *Provider) serveLoginForm(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("authRequestID")
	a, err := p.st.pendingAuthRequest(id)
	if err != nil {
		p.renderStale(w, err)
		return
	}
	if p.sso {
		if c, err := r.Cookie(ssoCookie); err == nil && p.st.loginBySSO(id, c.Value, p.ignoreReauth) {
			p.log.Info("devprovider: login by SSO session", "auth_request", id)
			http.Redirect(w, r, p.callbackURL(id), http.StatusSeeOther)
			return
		}
	}
	p.render(w, http.StatusOK, p.formData(a.id, a.clientID, a.loginHint, ""))
}

// ssoCookie holds the login session when Config.SSO is set.
const ssoCookie = "devprovider_sso"

func (p *Provider) callbackURL(id string) string {
	return strings.TrimSuffix(p.issuer, "/") + "/authorize/callback?" + url.Values{"id": {id}}.Encode()
}

// serveLogin checks the credentials. On success it sends the browser to
// zitadel's callback, which redirects to the client with the code and the
// state; otherwise it shows the form again. The auth request ID in the
// hidden field is unguessable and single-use, and
// http.CrossOriginProtection refuses cross-origin posts: CSRF protection
// enough for development.
func (p *Provider) serveLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginForm)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id := r.PostForm.Get("authRequestID")
	username := r.PostForm.Get("username")
	err := p.st.login(id, username, r.PostForm.Get("password"))
	if err == nil {
		p.log.Info("devprovider: login", "user", username, "auth_request", id)
		if p.sso {
			if a, err := p.st.AuthRequestByID(r.Context(), id); err == nil {
				ar, _ := a.(*authRequest)
				v := p.st.newSSOSession(ar.subject, ar.authTime)
				http.SetCookie(w, &http.Cookie{Name: ssoCookie, Value: v, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
			}
		}
		http.Redirect(w, r, p.callbackURL(id), http.StatusSeeOther)
		return
	}
	var msg string
	switch {
	case errors.Is(err, errBadCredentials):
		msg = "Invalid username or password."
	case errors.Is(err, errUserDisabled):
		msg = "This account is disabled."
	default:
		p.renderStale(w, err)
		return
	}
	p.log.Info("devprovider: login failed", "user", username, "auth_request", id, "err", err)
	a, err := p.st.pendingAuthRequest(id)
	if err != nil {
		p.renderStale(w, err)
		return
	}
	// 200, not 401: a 401 would need a WWW-Authenticate challenge
	// (RFC 9110 section 15.5.2), and the page is a form, not a challenge.
	p.render(w, http.StatusOK, p.formData(id, a.clientID, username, msg))
}

func (p *Provider) formData(id, clientID, username, errMsg string) loginData {
	return loginData{
		Form:     true,
		Action:   strings.TrimSuffix(p.issuer, "/") + loginPath,
		ID:       id,
		ClientID: clientID,
		Username: username,
		Error:    errMsg,
	}
}

// renderStale answers a login for an auth request that is unknown,
// expired or already completed.
func (p *Provider) renderStale(w http.ResponseWriter, err error) {
	msg := "This sign-in request is unknown or has expired. Go back to the application and start again."
	if errors.Is(err, errAlreadyLoggedIn) {
		msg = "You have already signed in for this request. Go back to the application and start again."
	}
	p.render(w, http.StatusBadRequest, loginData{Title: "Sign-in request not found", Error: msg})
}

func (p *Provider) serveLoggedOut(w http.ResponseWriter, _ *http.Request) {
	p.render(w, http.StatusOK, loginData{Title: "Signed out", Message: "You have been signed out."})
}

func (p *Provider) render(w http.ResponseWriter, status int, data loginData) {
	var buf bytes.Buffer
	if err := p.loginPage.Execute(&buf, data); err != nil {
		p.log.Error("devprovider: render login page", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// No form-action: browsers apply it to the redirects that follow the
	// post, which end at the client's redirect URI.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}
