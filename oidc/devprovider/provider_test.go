package devprovider

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestConfigValidate(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	valid := func() Config {
		return Config{
			Issuer:        "http://127.0.0.1:9000",
			AllowInsecure: true,
			Users:         []User{{Username: "alice", Password: "pw"}},
			Clients:       []Client{{ID: "c", RedirectURIs: []string{"http://127.0.0.1/cb"}}},
			SigningKey:    key(t),
		}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // substrings of the error; none: valid
	}{
		{name: "valid", mutate: func(*Config) {}},
		{name: "https issuer without AllowInsecure", mutate: func(c *Config) { c.Issuer, c.AllowInsecure = "https://idp.example", false }},
		{name: "empty issuer", mutate: func(c *Config) { c.Issuer = "" }, want: []string{"empty issuer"}},
		{name: "http issuer without AllowInsecure", mutate: func(c *Config) { c.AllowInsecure = false }, want: []string{"scheme for issuer must be `https`"}},
		{name: "issuer with query", mutate: func(c *Config) { c.Issuer += "/?x=1" }, want: []string{"no fragments or query"}},
		{name: "negative TTL", mutate: func(c *Config) { c.AccessTTL = -time.Second }, want: []string{"negative access token lifetime"}},
		{name: "ECDSA key", mutate: func(c *Config) { c.SigningKey = ec }, want: []string{"want *rsa.PrivateKey"}},
		{name: "small RSA key", mutate: func(c *Config) { c.SigningKey = small }, want: []string{"has 1024 bits"}},
		{
			name:   "duplicate user and empty password",
			mutate: func(c *Config) { c.Users = append(c.Users, User{Username: "alice", Subject: "other"}) },
			want:   []string{`users[1]: duplicate username "alice"`, "users[1]: empty password"},
		},
		{
			name:   "duplicate subject",
			mutate: func(c *Config) { c.Users = append(c.Users, User{Username: "al", Subject: "alice", Password: "x"}) },
			want:   []string{`users[1]: duplicate subject "alice"`},
		},
		{name: "empty username", mutate: func(c *Config) { c.Users[0].Username = "" }, want: []string{"users[0]: empty username"}},
		{
			name: "client problems",
			mutate: func(c *Config) {
				c.Clients = append(c.Clients,
					Client{ID: "c", RedirectURIs: []string{"http://127.0.0.1/cb#frag"}},
					Client{RedirectURIs: []string{"/relative"}},
					Client{ID: "d"})
			},
			want: []string{
				`clients[1]: duplicate id "c"`, "clients[1]: redirect URI \"http://127.0.0.1/cb#frag\" has a fragment",
				"clients[2]: empty id", "is not absolute", "clients[3]: no redirect URIs",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid()
			tc.mutate(&cfg)
			err := cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if _, err := New(cfg); err == nil {
				t.Errorf("New succeeded on an invalid config")
			}
		})
	}
}

func TestListen(t *testing.T) {
	p, err := New(Config{Issuer: "http://127.0.0.1:9", AllowInsecure: true, SigningKey: key(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := p.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen(127.0.0.1:0): %v", err)
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		t.Errorf("listening on %v, want loopback", ip)
	}
	ln.Close()
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		if ln, err := p.Listen(addr); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) succeeded, want it refused", addr)
		} else if !strings.Contains(err.Error(), "not a loopback address") {
			t.Errorf("Listen(%q) = %v, want a loopback refusal", addr, err)
		}
	}

	// The address check alone, without binding anything.
	force, err := New(Config{Issuer: "http://127.0.0.1:9", AllowInsecure: true, SigningKey: key(t), ForceNonLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		p    *Provider
		addr string
		ok   bool
	}{
		{p, "127.0.0.1:8080", true},
		{p, "127.3.2.1:0", true},
		{p, "[::1]:0", true},
		{p, "localhost:0", true},
		{p, "0.0.0.0:0", false},
		{p, ":587", false},
		{p, "[::]:0", false},
		{p, "192.0.2.1:0", false},
		{p, "example.com:0", false},
		{p, "127.0.0.1", false}, // no port
		{force, "0.0.0.0:0", true},
		{force, ":0", true},
	}
	for _, tc := range tests {
		err := tc.p.checkListenAddr(tc.addr)
		if (err == nil) != tc.ok {
			t.Errorf("checkListenAddr(%q) with ForceNonLoopback=%v = %v, want ok=%v", tc.addr, tc.p.forceNonLoopback, err, tc.ok)
		}
	}
}

// TestDiscovery checks the metadata and JWKS, for an issuer at the root
// and one with a path, mounted under it.
func TestDiscovery(t *testing.T) {
	tests := []struct {
		name  string
		path  string
		mount func(*Provider) http.Handler
	}{
		{name: "root", mount: func(p *Provider) http.Handler { return p.Handler() }},
		{name: "issuer with path", path: "/idp", mount: func(p *Provider) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("/idp/", p.Handler())
			return mux
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(nil)
			issuer := "http://" + srv.Listener.Addr().String() + tc.path
			p, err := New(Config{
				Issuer: issuer, AllowInsecure: true, SigningKey: key(t),
				Users:   []User{{Username: "alice", Password: "pw", Email: "alice@example.com", EmailVerified: true}},
				Clients: []Client{{ID: "c", RedirectURIs: []string{"http://127.0.0.1/cb"}, Scopes: []string{"openid", "smtp.send"}}},
			})
			if err != nil {
				t.Fatal(err)
			}
			srv.Config.Handler = tc.mount(p)
			srv.Start()
			t.Cleanup(srv.Close)

			var d struct {
				Issuer        string   `json:"issuer"`
				AuthEndpoint  string   `json:"authorization_endpoint"`
				JWKSURI       string   `json:"jwks_uri"`
				PKCEMethods   []string `json:"code_challenge_methods_supported"`
				ResponseTypes []string `json:"response_types_supported"`
				GrantTypes    []string `json:"grant_types_supported"`
				Scopes        []string `json:"scopes_supported"`
				Device        string   `json:"device_authorization_endpoint"`
			}
			getJSON(t, issuer+"/.well-known/openid-configuration", &d)
			if d.Issuer != issuer {
				t.Errorf("discovery issuer = %q, want %q", d.Issuer, issuer)
			}
			if d.AuthEndpoint != issuer+"/authorize" || d.JWKSURI != issuer+"/keys" {
				t.Errorf("endpoints = %q, %q", d.AuthEndpoint, d.JWKSURI)
			}
			if !slices.Equal(d.PKCEMethods, []string{"S256"}) || !slices.Equal(d.ResponseTypes, []string{"code"}) ||
				!slices.Equal(d.GrantTypes, []string{"authorization_code", "refresh_token"}) || d.Device != "" {
				t.Errorf("discovery = %+v", d)
			}
			if !slices.Contains(d.Scopes, "smtp.send") {
				t.Errorf("scopes_supported = %q, want smtp.send listed", d.Scopes)
			}

			var jwks jose.JSONWebKeySet
			getJSON(t, d.JWKSURI, &jwks)
			if len(jwks.Keys) != 1 || jwks.Keys[0].KeyID != p.st.key.id || jwks.Keys[0].Algorithm != "RS256" ||
				jwks.Keys[0].Use != "sig" || !jwks.Keys[0].IsPublic() {
				t.Errorf("JWKS = %+v", jwks)
			}

			// The gateway finds the keys through discovery.
			tok, err := p.AccessToken("alice", nil)
			if err != nil {
				t.Fatal(err)
			}
			e := &testEnv{p: p, issuer: issuer}
			if _, err := e.gatewayVerifier(t).Verify(t.Context(), tok); err != nil {
				t.Errorf("gateway Verify: %v", err)
			}
		})
	}
}

func getJSON(t *testing.T, u string, out any) {
	t.Helper()
	resp, body := get(t, noRedirects(), u)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %s: %s", u, resp.Status, body)
	}
	if err := json.Unmarshal([]byte(body), out); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// TestSigningKey checks that the kid comes from the key, so a persisted
// key keeps it, and that a key is generated when none is given.
func TestSigningKey(t *testing.T) {
	cfg := Config{Issuer: "http://127.0.0.1:9", AllowInsecure: true, SigningKey: key(t)}
	p1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p1.st.key.id == "" || p1.st.key.id != p2.st.key.id {
		t.Errorf("kids with one key = %q, %q; want equal, not empty", p1.st.key.id, p2.st.key.id)
	}
	cfg.SigningKey = nil
	p3, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p3.st.key.priv.N.BitLen() != 2048 || p3.st.key.id == p1.st.key.id {
		t.Errorf("generated key: %d bits, kid %q", p3.st.key.priv.N.BitLen(), p3.st.key.id)
	}
}
