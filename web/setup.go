package web

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/smtpgate/smtpgate/clientsetup"
)

// setupPages are the templates of the setup pages and the token checker.
var setupPages = []string{"setup", "setup_thunderbird", "setup_apple", "setup_client", "debugtoken"}

// setupClients are the mail programs with a setup page, in the order the
// index lists them.
var setupClients = []setupClient{
	{"thunderbird", "Thunderbird", "Windows, macOS, Linux: OAuth sign-in with the company add-on, or an app token"},
	{"apple", "Apple Mail (iPhone, iPad, Mac)", "a profile to install, with an app token made for it"},
	{"outlook", "Outlook", "an app token as the password"},
	{"android", "Thunderbird for Android, K-9 Mail", "an app token as the password"},
	{"msmtp", "msmtp", "OAuth (oauthbearer) with a token helper, or an app token"},
	{"neomutt", "NeoMutt", "OAuth (oauthbearer), or an app token"},
	{"curl", "curl", "OAuth (OAUTHBEARER or XOAUTH2), or an app token"},
	{"python", "Python (smtplib)", "an app token, or an OAuth token with XOAUTH2"},
	{"devices", "Printers, scanners, other devices", "an app token as the password"},
}

type setupClient struct {
	ID, Name, How string
}

// setupData is what the setup pages show.
type setupData struct {
	Clients []setupClient
	Client  setupClient
	Email   string
	Name    string
	clientsetup.Server
	Incoming *clientsetup.Incoming
	// The Thunderbird add-on, when thunderbird.client_id is set.
	Addon        bool
	AddonID      string
	AddonURL     string
	PoliciesURL  string
	Policies     string
	ProviderName string
	ClientID     string
	Scopes       string
	Audiences    []string
	ExtBrowser   bool
	AddonErr     string
	// The Apple profile, when an incoming server is configured.
	Profile bool
}

func (a *app) setupRoutes(r chi.Router) {
	r.Get("/.well-known/autoconfig/mail/config-v1.1.xml", a.autoconfig)
	r.Get("/mail/config-v1.1.xml", a.autoconfig)
	r.Get("/setup", a.setupIndex)
	r.Get("/setup/thunderbird/addon.xpi", a.addonXPI)
	r.Get("/setup/thunderbird/policies.json", a.policies)
	r.Get("/setup/{client}", a.setupPage)
	r.Post("/setup/apple/profile", a.appleProfile)
	r.Get("/debug/token", a.debugTokenForm)
	r.Post("/debug/token", a.debugToken)
}

func (a *app) server() clientsetup.Server {
	return clientsetup.Server{Host: a.cfg.SMTPHost, SubmissionPort: a.cfg.SubmissionPort, SubmissionsPort: a.cfg.SubmissionsPort}
}

// autoconfig serves Thunderbird's autoconfig document
// (config-v1.1.xml) for the configured domains. The domain is the one in
// ?emailaddress=, else the host asked for (autoconfig.<domain> or
// <domain>). Clients read the answer, so errors are plain text.
func (a *app) autoconfig(w http.ResponseWriter, r *http.Request) {
	var domain string
	if addr, ok := r.URL.Query()["emailaddress"]; ok {
		d, err := clientsetup.DomainOf(strings.Join(addr, ","))
		if err != nil {
			http.Error(w, "emailaddress is not a mail address", http.StatusBadRequest)
			return
		}
		domain = d
	} else {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		domain = strings.TrimPrefix(strings.ToLower(host), "autoconfig.")
	}
	if !a.cfg.Autoconfig.Serves(domain) {
		http.Error(w, "no mail configuration for this domain", http.StatusNotFound)
		return
	}
	b, err := clientsetup.AutoconfigXML(a.server(), a.cfg.Autoconfig, domain)
	if err != nil {
		a.log.Error("web: autoconfig", "domain", domain, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	a.log.Debug("web: autoconfig", "domain", domain, "remote", a.remoteIP(r))
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.Write(b)
}

// addon builds the Thunderbird add-on from the config and the provider's
// discovery document.
func (a *app) addon(ctx context.Context) (clientsetup.Addon, clientsetup.Endpoints, error) {
	if a.cfg.Thunderbird.ClientID == "" {
		return clientsetup.Addon{}, clientsetup.Endpoints{}, errNoAddon
	}
	_, p, err := a.oauth(ctx)
	if err != nil {
		return clientsetup.Addon{}, clientsetup.Endpoints{}, fmt.Errorf("%w: %w", errIdPDown, err)
	}
	e := clientsetup.Endpoints{Issuer: a.cfg.Issuer, Authorization: p.Endpoint().AuthURL, Token: p.Endpoint().TokenURL}
	ad, err := clientsetup.NewAddon(a.server(), a.cfg.Autoconfig, a.cfg.Thunderbird, e)
	return ad, e, err
}

var (
	errNoAddon = errors.New("web: thunderbird.client_id is not set")
	errIdPDown = errors.New("web: the identity provider's discovery document cannot be had")
)

// addonXPI serves the add-on. It is public: Thunderbird fetches it from
// the enterprise policy's install_url without signing in, and it holds
// nothing secret (a public client's ID and the provider's endpoints).
func (a *app) addonXPI(w http.ResponseWriter, r *http.Request) {
	ad, _, err := a.addon(r.Context())
	if a.addonFailed(w, r, err) {
		return
	}
	b, err := ad.XPI()
	if err != nil {
		a.log.Error("web: build add-on", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "The add-on could not be built.")
		return
	}
	w.Header().Set("Content-Type", "application/x-xpinstall")
	w.Header().Set("Content-Disposition", `attachment; filename="`+addonFile(ad.ID)+`"`)
	w.Write(b)
}

// addonFile is the name the profile-folder route needs: <id>.xpi.
func addonFile(id string) string { return id + ".xpi" }

func (a *app) policies(w http.ResponseWriter, r *http.Request) {
	ad, _, err := a.addon(r.Context())
	if a.addonFailed(w, r, err) {
		return
	}
	b, err := clientsetup.Policies(ad.ID, a.cfg.BaseURL+"/setup/thunderbird/addon.xpi")
	if err != nil {
		a.log.Error("web: policies.json", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "The policy could not be built.")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", `attachment; filename="policies.json"`)
	w.Write(b)
}

// addonFailed answers a request for the add-on that cannot be built.
func (a *app) addonFailed(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, errNoAddon):
		a.fail(w, r, http.StatusNotFound, "No Thunderbird add-on is configured here (thunderbird.client_id).")
	case errors.Is(err, errIdPDown):
		a.log.Warn("web: identity provider unavailable", "err", err)
		a.fail(w, r, http.StatusServiceUnavailable, "The sign-in service cannot be reached right now, and the add-on needs its addresses. Please try again in a minute.")
	default:
		a.log.Error("web: build add-on", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "The add-on cannot be built from this configuration: "+err.Error())
	}
	return true
}

// setupSession is the session of a setup page, or an answer asking to
// sign in.
func (a *app) setupSession(w http.ResponseWriter, r *http.Request) (*signIn, bool) {
	s, ok := a.session(r)
	if !ok {
		http.Redirect(w, r, "/login?return=/setup", http.StatusSeeOther)
	}
	return s, ok
}

func (a *app) setupData(s *signIn) *setupData {
	return &setupData{
		Clients:  setupClients,
		Email:    s.Addresses[0],
		Name:     s.Name,
		Server:   a.server(),
		Incoming: a.cfg.Autoconfig.Incoming,
		Profile:  a.cfg.Autoconfig.Incoming != nil,
	}
}

func (a *app) setupIndex(w http.ResponseWriter, r *http.Request) {
	s, ok := a.setupSession(w, r)
	if !ok {
		return
	}
	a.render(w, r, http.StatusOK, "setup", page{Session: s, Setup: a.setupData(s)})
}

func (a *app) setupPage(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "client")
	i := slices.IndexFunc(setupClients, func(c setupClient) bool { return c.ID == id })
	if i < 0 {
		a.fail(w, r, http.StatusNotFound, "There is no setup page for that program.")
		return
	}
	s, ok := a.setupSession(w, r)
	if !ok {
		return
	}
	d := a.setupData(s)
	d.Client = setupClients[i]
	switch id {
	case "thunderbird":
		a.thunderbirdData(r.Context(), d)
		a.render(w, r, http.StatusOK, "setup_thunderbird", page{Session: s, Setup: d})
	case "apple":
		// Creating the profile's token is a consent step: its nonce is
		// spent once, so a replayed POST mints nothing.
		nonce, err := a.cfg.Store.IssueNonce(r.Context(), s.SessionID, consentTTL)
		if err != nil {
			a.log.Error("web: issue consent nonce", "err", err)
			a.fail(w, r, http.StatusInternalServerError, "Something went wrong. Please try again.")
			return
		}
		a.render(w, r, http.StatusOK, "setup_apple", page{Session: s, Setup: d, Expiries: a.expiries(a.defaultDays()), Nonce: nonce})
	default:
		a.render(w, r, http.StatusOK, "setup_client", page{Session: s, Setup: d})
	}
}

func (a *app) thunderbirdData(ctx context.Context, d *setupData) {
	tb := a.cfg.Thunderbird
	if tb.ClientID == "" {
		return
	}
	d.Addon = true
	d.ClientID = tb.ClientID
	d.Scopes = strings.Join(tb.Scopes, " ")
	d.Audiences = a.cfg.Audiences
	d.ExtBrowser = tb.UseExternalBrowser
	d.AddonURL = a.cfg.BaseURL + "/setup/thunderbird/addon.xpi"
	d.PoliciesURL = a.cfg.BaseURL + "/setup/thunderbird/policies.json"
	ad, e, err := a.addon(ctx)
	if err != nil {
		d.AddonErr = err.Error()
		return
	}
	d.AddonID = ad.ID
	d.ProviderName, _ = clientsetup.ProviderName(tb, e)
	if p, err := clientsetup.Policies(ad.ID, d.AddonURL); err == nil {
		d.Policies = string(p)
	}
}

// appleProfile creates an app token for an Apple device and answers with
// a configuration profile that carries it. The form works as the "new
// token" form does: a label, a lifetime, the addresses; a recent sign-in.
func (a *app) appleProfile(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Autoconfig.Incoming == nil {
		a.fail(w, r, http.StatusNotFound, "Profiles need an incoming mail server in the configuration (autoconfig.incoming).")
		return
	}
	s, f, ok := a.tokenRequest(w, r)
	if !ok {
		return
	}
	secret, t, ok := a.createConsented(w, r, s, f, "web, Apple profile", "the Apple setup page", func(status int, msg string) {
		a.fail(w, r, status, msg)
	})
	if !ok {
		return
	}
	b, err := clientsetup.Mobileconfig(a.server(), a.cfg.Autoconfig, clientsetup.Profile{
		Email: s.Addresses[0], Password: secret, Name: s.Name,
		ProfileUUID: newUUID(), PayloadUUID: newUUID(),
	})
	if err != nil {
		a.cfg.Store.RevokeOwned(r.Context(), s.Mailbox(), t.ID, s.Subject)
		a.log.Error("web: mobileconfig", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "The profile could not be built.")
		return
	}
	w.Header().Set("Content-Type", "application/x-apple-aspen-config")
	w.Header().Set("Content-Disposition", `attachment; filename="mail.mobileconfig"`)
	w.Write(b)
}

// newUUID returns a random (version 4) UUID in the upper-case form
// Apple's profiles use.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}
