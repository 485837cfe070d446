package web

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/smtpgate/smtpgate/mailaddr"
	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/outbox"
	"github.com/smtpgate/smtpgate/store"
)

// A page is what every template gets.
type page struct {
	Session *signIn
	Title   string
	Status  int
	Message string

	// The token pages.
	Tokens   []tokenRow
	AnyLive  bool
	Form     tokenForm
	Errors   []string
	Expiries []expiry
	Created  *createdToken
	Settings settings
	Nonce    string // the consent form's one-time nonce

	// The setup pages and the token checker (setup.go, debugtoken.go).
	Setup  *setupData
	Report *oidc.Report

	// The Outbox pages; Dev shows the link to them.
	Outbox []outbox.Message
	Dev    bool
}

type tokenRow struct {
	store.Token
	Live bool
}

// A tokenForm is the "new token" form, as submitted.
type tokenForm struct {
	Label   string
	Days    int
	Senders []string
	Until   time.Time
}

type expiry struct {
	Days     int
	Label    string
	Selected bool
}

type createdToken struct {
	Secret string
	Token  store.Token
}

type settings struct {
	Host            string
	SubmissionPort  int
	SubmissionsPort int
}

func (a *app) home(w http.ResponseWriter, r *http.Request) {
	s, ok := a.session(r)
	if ok {
		http.Redirect(w, r, "/tokens", http.StatusSeeOther)
		return
	}
	a.render(w, r, http.StatusOK, "home", page{Session: s})
}

func (a *app) tokens(w http.ResponseWriter, r *http.Request) {
	s, ok := a.session(r)
	if !ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	a.renderTokens(w, r, s, http.StatusOK, tokenForm{Days: a.defaultDays(), Senders: s.Addresses[:1]}, nil)
}

func (a *app) renderTokens(w http.ResponseWriter, r *http.Request, s *signIn, status int, f tokenForm, errs []string) {
	list, err := a.cfg.Store.ListOwned(r.Context(), s.Mailbox())
	if err != nil {
		a.log.Error("web: list tokens", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "Your tokens cannot be listed right now.")
		return
	}
	now := a.cfg.Now()
	rows := make([]tokenRow, len(list))
	anyLive := false
	for i, t := range list {
		rows[i] = tokenRow{t, t.Live(now)}
		anyLive = anyLive || rows[i].Live
	}
	a.render(w, r, status, "tokens", page{Session: s, Tokens: rows, AnyLive: anyLive, Form: f, Errors: errs, Expiries: a.expiries(f.Days), Settings: a.settings()})
}

func (a *app) defaultDays() int { return int(a.cfg.TokenDefaultTTL / (24 * time.Hour)) }

// expiries are the lifetimes offered, up to the maximum.
func (a *app) expiries(selected int) []expiry {
	max := int(a.cfg.TokenMaxTTL / (24 * time.Hour))
	days := []int{7, 30, 90, 180, 365, 730}
	if d := a.defaultDays(); !slices.Contains(days, d) {
		days = append(days, d)
		slices.Sort(days)
	}
	var out []expiry
	for _, d := range days {
		if d <= max {
			out = append(out, expiry{d, fmt.Sprintf("%d days", d), d == selected})
		}
	}
	return out
}

func (a *app) settings() settings {
	return settings{a.cfg.SMTPHost, a.cfg.SubmissionPort, a.cfg.SubmissionsPort}
}

// parseForm reads and checks the "new token" form.
func (a *app) parseForm(r *http.Request, s *signIn) (tokenForm, []string) {
	var f tokenForm
	var errs []string
	f.Label = strings.TrimSpace(r.PostFormValue("label"))
	switch n := utf8.RuneCountInString(f.Label); {
	case n == 0:
		errs = append(errs, "Give the token a label, such as the device or program that will use it.")
	case n > 100:
		errs = append(errs, "The label is too long (100 characters at most).")
	}
	days, err := strconv.Atoi(r.PostFormValue("days"))
	if err != nil || !slices.ContainsFunc(a.expiries(0), func(e expiry) bool { return e.Days == days }) {
		errs = append(errs, "Choose one of the offered lifetimes.")
		days = a.defaultDays()
	}
	f.Days = days
	f.Until = a.cfg.Now().Add(time.Duration(days) * 24 * time.Hour)
	for _, addr := range r.PostForm["sender"] {
		// Compared as parsed addresses: strings.EqualFold would match the
		// Kelvin sign to k.
		pa, perr := mailaddr.Parse(addr)
		if i := slices.Index(s.Addresses, pa.String()); perr == nil && i >= 0 {
			if !slices.Contains(f.Senders, s.Addresses[i]) {
				f.Senders = append(f.Senders, s.Addresses[i])
			}
		} else {
			errs = append(errs, "You cannot let a token send as "+addr+".")
		}
	}
	if len(f.Senders) == 0 {
		errs = append(errs, "Choose at least one address the token may send as.")
	}
	return f, errs
}

// fresh reports whether the sign-in is recent enough to create a token.
func (a *app) fresh(s *signIn) bool {
	return a.cfg.Now().Sub(time.Unix(s.AuthTime, 0)) <= a.cfg.ReauthAge
}

// tokenRequest reads a "new token" form and answers it when it cannot go
// on: no session, a bad form, or a sign-in too old to create a token.
func (a *app) tokenRequest(w http.ResponseWriter, r *http.Request) (*signIn, tokenForm, bool) {
	s, ok := a.session(r)
	if !ok {
		a.fail(w, r, http.StatusUnauthorized, "Your session has ended. Please sign in again.")
		return nil, tokenForm{}, false
	}
	f, errs := a.parseForm(r, s)
	if len(errs) > 0 {
		a.renderTokens(w, r, s, http.StatusBadRequest, f, errs)
		return nil, f, false
	}
	if !a.fresh(s) {
		a.render(w, r, http.StatusOK, "reauth", page{Session: s})
		return nil, f, false
	}
	return s, f, true
}

// consentTTL is how long a consent page can be confirmed.
const consentTTL = 10 * time.Minute

func (a *app) newToken(w http.ResponseWriter, r *http.Request) {
	s, f, ok := a.tokenRequest(w, r)
	if !ok {
		return
	}
	nonce, err := a.cfg.Store.IssueNonce(r.Context(), s.SessionID, consentTTL)
	if err != nil {
		a.log.Error("web: issue consent nonce", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "Something went wrong. Please try again.")
		return
	}
	a.render(w, r, http.StatusOK, "consent", page{Session: s, Form: f, Settings: a.settings(), Nonce: nonce})
}

func (a *app) confirmToken(w http.ResponseWriter, r *http.Request) {
	s, f, ok := a.tokenRequest(w, r)
	if !ok {
		return
	}
	secret, t, ok := a.createConsented(w, r, s, f, "web", "your token list", func(status int, msg string) {
		a.renderTokens(w, r, s, status, f, []string{msg})
	})
	if !ok {
		return
	}
	a.render(w, r, http.StatusOK, "created", page{Session: s, Created: &createdToken{secret, t}, Settings: a.settings()})
}

// createConsented spends the consent step's one-time nonce, so a reload
// or a replayed POST does not mint a second token, then creates the token
// form f describes and logs the audit line. When it cannot, it has
// answered: formErr shows a problem with the form on the caller's page,
// and startOver names where to begin again.
func (a *app) createConsented(w http.ResponseWriter, r *http.Request, s *signIn, f tokenForm, via, startOver string,
	formErr func(status int, msg string)) (string, store.Token, bool) {
	switch err := a.cfg.Store.UseNonce(r.Context(), s.SessionID, r.PostFormValue("nonce")); {
	case errors.Is(err, store.ErrNoSession):
		a.log.Info("web: consent replayed or expired", "subject", s.Subject, "remote", a.remoteIP(r))
		a.fail(w, r, http.StatusConflict, "This confirmation was already used or has expired, so no token was created. Start again from "+startOver+".")
		return "", store.Token{}, false
	case err != nil:
		a.log.Error("web: use consent nonce", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "The token could not be created. Please try again.")
		return "", store.Token{}, false
	}
	senders := make([]mailaddr.Address, len(f.Senders))
	for i, addr := range f.Senders {
		senders[i] = mailaddr.MustParse(addr) // from the session, parsed at sign-in
	}
	secret, t, err := a.cfg.Store.Create(r.Context(), store.NewToken{
		Owner:       s.Mailbox(),
		Creator:     s.Subject,
		Label:       f.Label,
		Senders:     senders,
		ExpiresAt:   f.Until,
		CreatedFrom: a.remoteIP(r),
	})
	switch {
	case errors.Is(err, store.ErrTooMany):
		formErr(http.StatusConflict, "You have as many live tokens as allowed. Revoke one you no longer use first.")
		return "", store.Token{}, false
	case errors.Is(err, store.ErrValidation):
		formErr(http.StatusBadRequest, strings.TrimPrefix(err.Error(), "store: "))
		return "", store.Token{}, false
	case err != nil:
		a.log.Error("web: create token", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "The token could not be created. Please try again.")
		return "", store.Token{}, false
	}
	a.log.Info("audit: token created", "by", s.Subject, "via", via, "id", t.ID, "owner", t.Owner, "label", t.Label, "senders", t.Senders, "expires", t.ExpiresAt, "remote", a.remoteIP(r))
	return secret, t, true
}

func (a *app) revoke(w http.ResponseWriter, r *http.Request) {
	s, ok := a.session(r)
	if !ok {
		a.fail(w, r, http.StatusUnauthorized, "Your session has ended. Please sign in again.")
		return
	}
	id := chi.URLParam(r, "id")
	err := a.cfg.Store.RevokeOwned(r.Context(), s.Mailbox(), id, s.Subject)
	switch {
	case errors.Is(err, store.ErrNotFound):
		a.fail(w, r, http.StatusNotFound, "There is no such token.")
		return
	case err != nil:
		a.log.Error("web: revoke token", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "The token could not be revoked. Please try again.")
		return
	}
	a.log.Info("audit: token revoked", "by", s.Subject, "via", "web", "id", id, "owner", s.mailbox(), "remote", a.remoteIP(r))
	http.Redirect(w, r, "/tokens", http.StatusSeeOther)
}

func (a *app) revokeAll(w http.ResponseWriter, r *http.Request) {
	s, ok := a.session(r)
	if !ok {
		a.fail(w, r, http.StatusUnauthorized, "Your session has ended. Please sign in again.")
		return
	}
	n, err := a.cfg.Store.RevokeAllOwned(r.Context(), s.Mailbox(), s.Subject, false)
	if err != nil {
		a.log.Error("web: revoke all tokens", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "The tokens could not be revoked. Please try again.")
		return
	}
	a.log.Info("audit: all tokens revoked", "by", s.Subject, "via", "web", "owner", s.mailbox(), "count", n, "remote", a.remoteIP(r))
	http.Redirect(w, r, "/tokens", http.StatusSeeOther)
}
