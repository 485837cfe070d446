package web

import (
	"net/http"
	"strings"
)

// maxDebugToken bounds the token checker's form; oidc refuses larger
// tokens anyway.
const maxDebugToken = 128 << 10

// debugTokenForm shows the token checker to a signed-in person.
func (a *app) debugTokenForm(w http.ResponseWriter, r *http.Request) {
	s, ok := a.debugSession(w, r)
	if !ok {
		return
	}
	a.render(w, r, http.StatusOK, "debugtoken", page{Session: s})
}

// debugToken runs the verifier's checks on a pasted token and shows each.
// The token comes in a POST body, never the URL, so it stays out of logs.
func (a *app) debugToken(w http.ResponseWriter, r *http.Request) {
	s, ok := a.debugSession(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxDebugToken)
	if err := r.ParseForm(); err != nil {
		a.fail(w, r, http.StatusRequestEntityTooLarge, "That is too long to be a token.")
		return
	}
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if len(tok) > 7 && strings.EqualFold(tok[:7], "bearer ") {
		tok = strings.TrimSpace(tok[7:])
	}
	if tok == "" {
		a.render(w, r, http.StatusBadRequest, "debugtoken", page{Session: s, Errors: []string{"Paste an access token to check."}})
		return
	}
	rep := a.cfg.Verifier.Explain(r.Context(), tok)
	a.log.Info("web: token checked", "by", s.mailbox(), "accepted", rep.Accepted(), "remote", a.remoteIP(r))
	a.render(w, r, http.StatusOK, "debugtoken", page{Session: s, Report: rep})
}

func (a *app) debugSession(w http.ResponseWriter, r *http.Request) (*signIn, bool) {
	if a.cfg.Verifier == nil {
		a.fail(w, r, http.StatusNotFound, "There is no such page.")
		return nil, false
	}
	s, ok := a.session(r)
	if !ok {
		a.fail(w, r, http.StatusUnauthorized, "Sign in to use the token checker.")
		return nil, false
	}
	return s, true
}
