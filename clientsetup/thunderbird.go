package clientsetup

import (
	"archive/zip"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Thunderbird is the thunderbird: section of smtpgate's configuration:
// the OAuth client that Thunderbird uses at the company's provider.
type Thunderbird struct {
	// ClientID is the public client registered at the provider for
	// Thunderbird. Empty: no add-on is offered.
	ClientID string `yaml:"client_id,omitempty"`
	// Scopes Thunderbird requests. Default openid, email, offline_access.
	Scopes []string `yaml:"scopes,omitempty"`
	// ProviderName is the add-on's oauth_provider.issuer: the name under
	// which Thunderbird keeps refresh tokens (oauth://<name>). Default the
	// provider's host name. Changing it signs every user out.
	ProviderName string `yaml:"provider_name,omitempty"`
	// UseExternalBrowser signs in in the system browser instead of a
	// Thunderbird window; it needs Thunderbird 153.
	UseExternalBrowser bool `yaml:"use_external_browser,omitempty"`
	// AddonVersion is the add-on's version, default "1.0". Thunderbird
	// replaces an installed add-on only with a higher version: raise it
	// when the settings above change.
	AddonVersion string `yaml:"addon_version,omitempty"`
}

// addonVersionRE is a WebExtension version: up to four numbers.
var addonVersionRE = regexp.MustCompile(`^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,3}$`)

// builtinIssuers are the names Thunderbird's own providers use
// (OAuth2Providers.sys.mjs). Their refresh tokens belong to Thunderbird's
// client IDs: an add-on must never claim them.
var builtinIssuers = []string{
	"accounts.google.com",
	"login.microsoftonline.com",
	"login.yahoo.com",
	"login.aol.com",
	"o2.mail.ru",
	"oauth.yandex.com",
}

// Validate reports every problem at once. It also fills the defaults.
func (t *Thunderbird) Validate() error {
	var errs []error
	if len(t.Scopes) == 0 {
		t.Scopes = []string{"openid", "email", "offline_access"}
	}
	if t.AddonVersion == "" {
		t.AddonVersion = "1.0"
	} else if !addonVersionRE.MatchString(t.AddonVersion) {
		errs = append(errs, fmt.Errorf("thunderbird.addon_version %q: want up to four dot-separated numbers, such as 1.2", t.AddonVersion))
	}
	for i, s := range t.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			errs = append(errs, fmt.Errorf("thunderbird.scopes[%d] %q: a scope is one word", i, s))
		}
	}
	if t.ClientID == "" && (t.ProviderName != "" || t.UseExternalBrowser) {
		errs = append(errs, errors.New("thunderbird: client_id is required when the section is used"))
	}
	if err := checkProviderName(t.ProviderName); t.ProviderName != "" && err != nil {
		errs = append(errs, fmt.Errorf("thunderbird.provider_name: %w", err))
	}
	return errors.Join(errs...)
}

func checkProviderName(name string) error {
	n := strings.ToLower(strings.TrimSuffix(name, "/"))
	if u, err := url.Parse(n); err == nil && u.Host != "" {
		n = u.Hostname()
	}
	if slices.Contains(builtinIssuers, n) {
		return fmt.Errorf("%q is one of Thunderbird's built-in providers, whose tokens belong to Thunderbird's own client IDs; choose another name, such as your company's sign-in host", name)
	}
	if name == "" || len(name) > 200 || strings.ContainsAny(name, " \t\r\n") {
		return fmt.Errorf("%q: want a host name or URL without spaces", name)
	}
	return nil
}

// Endpoints are what the provider's discovery document (OpenID Connect
// Discovery 1.0) says.
type Endpoints struct {
	Issuer        string // the "issuer"
	Authorization string // the "authorization_endpoint"
	Token         string // the "token_endpoint"
}

// Addon describes the generated add-on.
type Addon struct {
	ID       string // the gecko id
	Manifest []byte // manifest.json
}

// AddonID is the add-on's gecko id: stable for a given SMTP host, so a
// policy that force-installs it keeps working across versions.
func AddonID(s Server) string { return "oauth-provider@" + strings.ToLower(s.Host) }

// ProviderName is the oauth_provider issuer the add-on uses: the
// configured name, else the provider's host name (as Thunderbird's
// built-in providers are named).
func ProviderName(t Thunderbird, e Endpoints) (string, error) {
	name := t.ProviderName
	if name == "" {
		u, err := url.Parse(e.Issuer)
		if err != nil || u.Hostname() == "" {
			return "", fmt.Errorf("clientsetup: issuer %q has no host name", e.Issuer)
		}
		name = u.Hostname()
	}
	if err := checkProviderName(name); err != nil {
		return "", fmt.Errorf("clientsetup: provider name (set thunderbird.provider_name): %w", err)
	}
	return name, nil
}

// The manifest.json keys Thunderbird reads (WebExtension manifest version 2
// with Thunderbird's oauth_provider, schema oauthProvider.json).
type manifest struct {
	ManifestVersion int             `json:"manifest_version"`
	Name            string          `json:"name"`
	Description     string          `json:"description"`
	Version         string          `json:"version"`
	Settings        browserSettings `json:"browser_specific_settings"`
	OAuthProvider   oauthProvider   `json:"oauth_provider"`
}

type browserSettings struct {
	Gecko struct {
		ID               string `json:"id"`
		StrictMinVersion string `json:"strict_min_version"`
	} `json:"gecko"`
}

// oauthProvider follows Thunderbird's schema: every field a string except
// hostnames (an array of strings) and usePKCE and useExternalBrowser
// (booleans); scopes is one space-separated string.
type oauthProvider struct {
	Issuer                string   `json:"issuer"`
	ClientID              string   `json:"clientId"`
	AuthorizationEndpoint string   `json:"authorizationEndpoint"`
	TokenEndpoint         string   `json:"tokenEndpoint"`
	RedirectionEndpoint   string   `json:"redirectionEndpoint"`
	UsePKCE               bool     `json:"usePKCE"`
	Hostnames             []string `json:"hostnames"`
	Scopes                string   `json:"scopes"`
	UseExternalBrowser    bool     `json:"useExternalBrowser,omitempty"`
}

// RedirectionEndpoint is the loopback redirect Thunderbird listens on
// (RFC 8252 section 7.3: any port).
const RedirectionEndpoint = "http://localhost"

// NewAddon builds the add-on's manifest. The hostnames are the SMTP host,
// the autoconfig domains, and the incoming host when it takes OAuth2.
func NewAddon(s Server, a Autoconfig, t Thunderbird, e Endpoints) (Addon, error) {
	var errs []error
	if err := s.validate(false); err != nil {
		errs = append(errs, err)
	}
	if t.ClientID == "" {
		errs = append(errs, errors.New("clientsetup: thunderbird.client_id is required for the add-on"))
	}
	for _, ep := range []struct{ name, url string }{{"authorization_endpoint", e.Authorization}, {"token_endpoint", e.Token}} {
		u, err := url.Parse(ep.url)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("clientsetup: the provider's %s %q is not an http(s) URL", ep.name, ep.url))
		}
	}
	name, err := ProviderName(t, e)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return Addon{}, errors.Join(errs...)
	}
	scopes := t.Scopes
	if len(scopes) == 0 {
		scopes = []string{"openid", "email", "offline_access"}
	}
	hosts := []string{strings.ToLower(s.Host)}
	hosts = append(hosts, a.Domains...)
	if in := a.Incoming; in != nil && slices.Contains(in.Authentication, "OAuth2") {
		hosts = append(hosts, strings.ToLower(in.Hostname))
	}
	hosts = dedupe(hosts)

	m := manifest{
		ManifestVersion: 2,
		Name:            "Mail sign-in for " + name,
		Description:     "Lets Thunderbird sign in to " + strings.Join(hosts, ", ") + " with your company account (OAuth 2.0). Generated by smtpgate.",
		Version:         cmp.Or(t.AddonVersion, "1.0"),
		OAuthProvider: oauthProvider{
			Issuer:                name,
			ClientID:              t.ClientID,
			AuthorizationEndpoint: e.Authorization,
			TokenEndpoint:         e.Token,
			RedirectionEndpoint:   RedirectionEndpoint,
			UsePKCE:               true,
			Hostnames:             hosts,
			Scopes:                strings.Join(scopes, " "),
			UseExternalBrowser:    t.UseExternalBrowser,
		},
	}
	m.Settings.Gecko.ID = AddonID(s)
	m.Settings.Gecko.StrictMinVersion = "140.0"
	if t.UseExternalBrowser {
		m.Settings.Gecko.StrictMinVersion = "153.0"
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Addon{}, err
	}
	return Addon{ID: m.Settings.Gecko.ID, Manifest: append(b, '\n')}, nil
}

func dedupe(l []string) []string {
	var out []string
	for _, s := range l {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// zipTime is the modification time of the files in the .xpi, fixed so
// the same config gives the same bytes.
var zipTime = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// XPI returns the add-on as an .xpi: a zip archive with manifest.json.
// Thunderbird 153 ESR installs it unsigned through the enterprise policy
// or from the profile's extensions folder.
func (ad Addon) XPI() ([]byte, error) {
	var b bytes.Buffer
	z := zip.NewWriter(&b)
	w, err := z.CreateHeader(&zip.FileHeader{Name: "manifest.json", Method: zip.Deflate, Modified: zipTime})
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(ad.Manifest); err != nil {
		return nil, err
	}
	if err := z.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Policies returns the enterprise policies.json that force-installs the
// add-on from installURL (Thunderbird's ExtensionSettings policy). On
// Linux it goes in /etc/thunderbird/policies/; Windows takes the same
// JSON through Group Policy, macOS through a configuration profile.
func Policies(addonID, installURL string) ([]byte, error) {
	u, err := url.Parse(installURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http" && u.Scheme != "file") {
		return nil, fmt.Errorf("clientsetup: install URL %q is not an http(s) or file URL", installURL)
	}
	type setting struct {
		InstallationMode string `json:"installation_mode"`
		InstallURL       string `json:"install_url"`
	}
	p := map[string]any{"policies": map[string]any{
		"ExtensionSettings": map[string]setting{addonID: {"force_installed", installURL}},
	}}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
