package clientsetup

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "update golden files")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update ./clientsetup/)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs from the golden file (-want +got):\n%s", name, diff)
	}
}

var (
	testServer     = Server{Host: "mail.example.com", SubmissionPort: 587, SubmissionsPort: 465}
	testAutoconfig = Autoconfig{
		Domains:  []string{"example.com", "example.org"},
		Incoming: &Incoming{Type: "imap", Hostname: "imap.example.com"},
	}
	testEndpoints = Endpoints{
		Issuer:        "https://sso.example.com/realms/corp",
		Authorization: "https://sso.example.com/realms/corp/protocol/openid-connect/auth",
		Token:         "https://sso.example.com/realms/corp/protocol/openid-connect/token",
	}
)

func validAutoconfig(t *testing.T) Autoconfig {
	t.Helper()
	a := testAutoconfig
	a.Domains = slices.Clone(a.Domains)
	in := *a.Incoming
	a.Incoming = &in
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAutoconfigXML(t *testing.T) {
	a := validAutoconfig(t)
	got, err := AutoconfigXML(testServer, a, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "autoconfig.xml", got)

	// It parses, and says what the config says.
	var c clientConfig
	if err := xml.Unmarshal(got, &c); err != nil {
		t.Fatalf("the autoconfig document does not parse: %v", err)
	}
	p := c.Provider
	if c.Version != "1.1" || p.ID != "example.org" || p.Domain != "example.org" {
		t.Errorf("clientConfig version %q, provider %q, domain %q", c.Version, p.ID, p.Domain)
	}
	wantOut := []serverConfig{
		{"smtp", "mail.example.com", 465, "SSL", []string{"OAuth2", "password-cleartext"}, "%EMAILADDRESS%"},
		{"smtp", "mail.example.com", 587, "STARTTLS", []string{"OAuth2", "password-cleartext"}, "%EMAILADDRESS%"},
	}
	if diff := cmp.Diff(wantOut, p.Outgoing); diff != "" {
		t.Errorf("outgoing servers (-want +got):\n%s", diff)
	}
	wantIn := []serverConfig{{"imap", "imap.example.com", 993, "SSL", []string{"password-cleartext"}, "%EMAILADDRESS%"}}
	if diff := cmp.Diff(wantIn, p.Incoming); diff != "" {
		t.Errorf("incoming servers (-want +got):\n%s", diff)
	}

	// Without an incoming server and with only STARTTLS.
	got, err = AutoconfigXML(Server{Host: "mail.example.com", SubmissionPort: 587}, Autoconfig{Domains: []string{"example.com"}}, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	c = clientConfig{}
	if err := xml.Unmarshal(got, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Provider.Incoming) != 0 || len(c.Provider.Outgoing) != 1 || c.Provider.Outgoing[0].Port != 587 {
		t.Errorf("STARTTLS only, no incoming: got %+v", c.Provider)
	}

	if _, err := AutoconfigXML(testServer, a, "example.net"); err == nil {
		t.Error("AutoconfigXML for a domain not configured succeeded")
	}
}

func TestAutoconfigValidate(t *testing.T) {
	a := Autoconfig{
		Domains:  []string{"Example.com", "example.com", "bad domain"},
		Incoming: &Incoming{Type: "exchange", Hostname: "", Port: 70000, SocketType: "TLS", Authentication: []string{"kerberos"}},
	}
	err := a.Validate()
	for _, want := range []string{`"example.com": listed twice`, `"bad domain": not a domain name`, `type "exchange"`, `hostname ""`, "port 70000", `socket_type "TLS"`, `authentication "kerberos"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, want)
		}
	}
	b := Autoconfig{Incoming: &Incoming{Type: "pop3", Hostname: "pop.example.com"}}
	if err := b.Validate(); err == nil || !strings.Contains(err.Error(), "needs autoconfig.domains") {
		t.Errorf("incoming without domains: %v", err)
	}
	if b.Incoming.Port != 995 || b.Incoming.SocketType != "SSL" {
		t.Errorf("pop3 defaults: port %d, socket %q", b.Incoming.Port, b.Incoming.SocketType)
	}
}

func TestDomainOf(t *testing.T) {
	for in, want := range map[string]string{
		"alice@Example.COM":    "example.com",
		"\"a b\"@example.org":  "example.org",
		"alice@sub.example.co": "sub.example.co",
	} {
		if got, err := DomainOf(in); err != nil || got != want {
			t.Errorf("DomainOf(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "alice", "Alice <alice@example.com>", "alice@example.com (x)", "alice@[127.0.0.1]", "alice@-x.com", "a@b@c", strings.Repeat("a", 300) + "@example.com", "alice@exa_mple.com"} {
		if got, err := DomainOf(in); err == nil {
			t.Errorf("DomainOf(%q) = %q, want an error", in, got)
		}
	}
}

func FuzzDomainOf(f *testing.F) {
	for _, s := range []string{"alice@example.com", "\"x\"@y.z", "<a@b>", "a@b.c (d)", "=?utf-8?q?x?= <a@b>", "a@[::1]", "@", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := DomainOf(s)
		if err != nil {
			return
		}
		if !validHostname(d) || d != strings.ToLower(d) || !strings.HasSuffix(strings.ToLower(s), "@"+d) {
			t.Errorf("DomainOf(%q) = %q, not the lower-case host name at the end", s, d)
		}
	})
}

func TestThunderbirdValidate(t *testing.T) {
	tb := Thunderbird{ProviderName: "login.microsoftonline.com", Scopes: []string{"openid", "two words"}, AddonVersion: "1.0beta"}
	err := tb.Validate()
	for _, want := range []string{"built-in providers", `scopes[1] "two words"`, "client_id is required", `addon_version "1.0beta"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, want)
		}
	}
	for _, name := range []string{"https://accounts.google.com", "Accounts.Google.com"} {
		tb := Thunderbird{ClientID: "tb", ProviderName: name}
		if err := tb.Validate(); err == nil {
			t.Errorf("provider_name %q accepted", name)
		}
	}
	ok := Thunderbird{ClientID: "thunderbird"}
	if err := ok.Validate(); err != nil || !slices.Equal(ok.Scopes, []string{"openid", "email", "offline_access"}) || ok.AddonVersion != "1.0" {
		t.Errorf("defaults: %v, scopes %v, version %q", err, ok.Scopes, ok.AddonVersion)
	}
	for _, v := range []string{"2", "1.2.3.4", "10.0.1"} {
		if err := (&Thunderbird{ClientID: "x", AddonVersion: v}).Validate(); err != nil {
			t.Errorf("addon_version %q refused: %v", v, err)
		}
	}
	for _, v := range []string{"1.2.3.4.5", "01.2", "1..2", "v1", "1.0000000000"} {
		if err := (&Thunderbird{ClientID: "x", AddonVersion: v}).Validate(); err == nil {
			t.Errorf("addon_version %q accepted", v)
		}
	}
}

// readXPI opens an .xpi as Thunderbird does: a zip archive with
// manifest.json at its root.
func readXPI(t *testing.T, b []byte) map[string]any {
	t.Helper()
	z, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("the .xpi is not a zip archive: %v", err)
	}
	if len(z.File) != 1 || z.File[0].Name != "manifest.json" {
		t.Fatalf("the .xpi holds %v, want just manifest.json", z.File)
	}
	r, err := z.File[0].Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	raw, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	return m
}

// checkOAuthProvider checks a manifest against Thunderbird's oauthProvider
// schema (Thunderbird 140, plus 153's optional fields): every required
// field present with its type, and no field the schema does not know.
func checkOAuthProvider(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	op, ok := m["oauth_provider"].(map[string]any)
	if !ok {
		t.Fatalf("manifest has no oauth_provider object: %v", m)
	}
	for _, k := range []string{"issuer", "clientId", "authorizationEndpoint", "tokenEndpoint", "redirectionEndpoint", "scopes"} {
		if s, ok := op[k].(string); !ok || s == "" {
			t.Errorf("oauth_provider.%s = %#v, want a non-empty string", k, op[k])
		}
	}
	hs, ok := op["hostnames"].([]any)
	if !ok || len(hs) == 0 {
		t.Errorf("oauth_provider.hostnames = %#v, want a non-empty array", op["hostnames"])
	}
	for _, h := range hs {
		if _, ok := h.(string); !ok {
			t.Errorf("oauth_provider.hostnames has %#v, want strings", h)
		}
	}
	if b, ok := op["usePKCE"].(bool); !ok || !b {
		t.Errorf("oauth_provider.usePKCE = %#v, want true", op["usePKCE"])
	}
	if v, ok := op["useExternalBrowser"]; ok {
		if _, ok := v.(bool); !ok {
			t.Errorf("oauth_provider.useExternalBrowser = %#v, want a boolean", v)
		}
	}
	known := []string{"issuer", "clientId", "clientSecret", "authorizationEndpoint", "tokenEndpoint", "redirectionEndpoint", "usePKCE", "hostnames", "scopes", "useExternalBrowser", "issuerIdentifier"}
	for k := range op {
		if !slices.Contains(known, k) {
			t.Errorf("oauth_provider has %q, which Thunderbird's schema does not know", k)
		}
	}
	return op
}

func TestAddon(t *testing.T) {
	a := validAutoconfig(t)
	a.Incoming.Authentication = []string{"OAuth2"}
	tb := Thunderbird{ClientID: "thunderbird"}
	if err := tb.Validate(); err != nil {
		t.Fatal(err)
	}
	ad, err := NewAddon(testServer, a, tb, testEndpoints)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "manifest.json", ad.Manifest)
	x, err := ad.XPI()
	if err != nil {
		t.Fatal(err)
	}
	if x2, _ := ad.XPI(); !bytes.Equal(x, x2) {
		t.Error("the same add-on gave two different .xpi files")
	}
	m := readXPI(t, x)
	op := checkOAuthProvider(t, m)
	want := map[string]any{
		"issuer":                "sso.example.com",
		"clientId":              "thunderbird",
		"authorizationEndpoint": testEndpoints.Authorization,
		"tokenEndpoint":         testEndpoints.Token,
		"redirectionEndpoint":   "http://localhost",
		"usePKCE":               true,
		"hostnames":             []any{"mail.example.com", "example.com", "example.org", "imap.example.com"},
		"scopes":                "openid email offline_access",
	}
	if diff := cmp.Diff(want, op); diff != "" {
		t.Errorf("oauth_provider (-want +got):\n%s", diff)
	}
	gecko := m["browser_specific_settings"].(map[string]any)["gecko"].(map[string]any)
	if gecko["id"] != "oauth-provider@mail.example.com" || gecko["strict_min_version"] != "140.0" {
		t.Errorf("gecko = %v", gecko)
	}
	if m["manifest_version"] != float64(2) {
		t.Errorf("manifest_version = %v", m["manifest_version"])
	}

	// 153's external browser raises the minimum version; the add-on's
	// version is the configured one.
	tb.UseExternalBrowser = true
	tb.AddonVersion = "1.3"
	tb.ProviderName = "https://sso.example.com/realms/corp"
	ad, err = NewAddon(testServer, Autoconfig{}, tb, testEndpoints)
	if err != nil {
		t.Fatal(err)
	}
	x, _ = ad.XPI()
	m = readXPI(t, x)
	op = checkOAuthProvider(t, m)
	if op["useExternalBrowser"] != true || op["issuer"] != "https://sso.example.com/realms/corp" {
		t.Errorf("oauth_provider = %v", op)
	}
	if m["version"] != "1.3" {
		t.Errorf("version = %v, want 1.3", m["version"])
	}
	if v := m["browser_specific_settings"].(map[string]any)["gecko"].(map[string]any)["strict_min_version"]; v != "153.0" {
		t.Errorf("strict_min_version with useExternalBrowser = %v, want 153.0", v)
	}
}

func TestAddonRefused(t *testing.T) {
	entra := Endpoints{
		Issuer:        "https://login.microsoftonline.com/tid/v2.0",
		Authorization: "https://login.microsoftonline.com/tid/oauth2/v2.0/authorize",
		Token:         "https://login.microsoftonline.com/tid/oauth2/v2.0/token",
	}
	_, err := NewAddon(testServer, Autoconfig{}, Thunderbird{ClientID: "x"}, entra)
	if err == nil || !strings.Contains(err.Error(), "built-in providers") || !strings.Contains(err.Error(), "thunderbird.provider_name") {
		t.Errorf("NewAddon for Entra without provider_name = %v, want the built-in name refused", err)
	}
	if _, err := NewAddon(testServer, Autoconfig{}, Thunderbird{ClientID: "x", ProviderName: "sso.contoso.com"}, entra); err != nil {
		t.Errorf("NewAddon for Entra with provider_name: %v", err)
	}
	_, err = NewAddon(Server{}, Autoconfig{}, Thunderbird{}, Endpoints{Issuer: "https://x", Authorization: "ftp://x", Token: ""})
	for _, want := range []string{"host name is required", "client_id is required", "authorization_endpoint", "token_endpoint"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewAddon with nothing = %v, want it to contain %q", err, want)
		}
	}
}

func TestPolicies(t *testing.T) {
	b, err := Policies("oauth-provider@mail.example.com", "https://mail-auth.example.com/setup/thunderbird/addon.xpi")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "policies.json", b)
	var p struct {
		Policies struct {
			ExtensionSettings map[string]struct {
				InstallationMode string `json:"installation_mode"`
				InstallURL       string `json:"install_url"`
			}
		} `json:"policies"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	s := p.Policies.ExtensionSettings["oauth-provider@mail.example.com"]
	if s.InstallationMode != "force_installed" || s.InstallURL != "https://mail-auth.example.com/setup/thunderbird/addon.xpi" {
		t.Errorf("ExtensionSettings = %+v", p.Policies.ExtensionSettings)
	}
	if _, err := Policies("x", "javascript:alert(1)"); err == nil {
		t.Error("Policies accepted a javascript: URL")
	}
}

var testProfile = Profile{
	Email:       "alice@example.com",
	Password:    "smtpgate_abc<&>\"'",
	Name:        "Alice <Example>",
	ProfileUUID: "6F1B0C8E-0D1A-4F7E-9B7A-1C2D3E4F5A6B",
	PayloadUUID: "0A1B2C3D-4E5F-4A7B-8C9D-0E1F2A3B4C5D",
}

func TestMobileconfig(t *testing.T) {
	a := validAutoconfig(t)
	b, err := Mobileconfig(testServer, a, testProfile)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "profile.mobileconfig", b)
	// Read it back with Python's plistlib, a property-list reader that is
	// not ours.
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("SMTPGATE_REQUIRE_E2E") != "" {
			t.Fatal("python3 is required")
		}
		t.Skip("python3 not available")
	}
	cmd := exec.Command(py, "-c", `import json, plistlib, sys
p = plistlib.loads(sys.stdin.buffer.read())
print(json.dumps(p))`)
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("plistlib cannot read the profile: %v", err)
	}
	var p map[string]any
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	if p["PayloadType"] != "Configuration" || p["PayloadUUID"] != testProfile.ProfileUUID || p["PayloadVersion"] != float64(1) {
		t.Errorf("profile = %v", p)
	}
	mail := p["PayloadContent"].([]any)[0].(map[string]any)
	want := map[string]any{
		"PayloadType":                      "com.apple.mail.managed",
		"EmailAddress":                     "alice@example.com",
		"EmailAccountName":                 "Alice <Example>",
		"OutgoingMailServerHostName":       "mail.example.com",
		"OutgoingMailServerPortNumber":     float64(465),
		"OutgoingMailServerUseSSL":         true,
		"OutgoingMailServerUsername":       "alice@example.com",
		"OutgoingPassword":                 testProfile.Password,
		"IncomingMailServerHostName":       "imap.example.com",
		"IncomingMailServerPortNumber":     float64(993),
		"OutgoingMailServerAuthentication": "EmailAuthPassword",
	}
	for k, v := range want {
		if mail[k] != v {
			t.Errorf("mail payload %s = %#v, want %#v", k, mail[k], v)
		}
	}
}

func TestMobileconfigRefused(t *testing.T) {
	_, err := Mobileconfig(testServer, Autoconfig{}, Profile{Email: "nope"})
	for _, want := range []string{"needs autoconfig.incoming", `"nope" does not end in @`, "needs a password", "UUIDs"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Mobileconfig with nothing = %v, want it to contain %q", err, want)
		}
	}
}
