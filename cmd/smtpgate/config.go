package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/smtpgate/smtpgate/clientsetup"
	"github.com/smtpgate/smtpgate/gateway"
	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/store"
)

// Config is smtpgate's YAML configuration. Keys are snake_case; durations
// are written "30s"; secrets come from files.
type Config struct {
	SMTP            SMTPConfig     `yaml:"smtp,omitempty"`
	OIDC            OIDCConfig     `yaml:"oidc,omitempty"`
	Upstream        UpstreamConfig `yaml:"upstream,omitempty"`
	Web             WebConfig      `yaml:"web,omitempty"`
	Store           StoreConfig    `yaml:"store,omitempty"`
	Tokens          TokensConfig   `yaml:"tokens,omitempty"`
	Log             LogConfig      `yaml:"log,omitempty"`
	ShutdownTimeout time.Duration  `yaml:"shutdown_timeout,omitempty"` // default 30s

	// Autoconfig and Thunderbird set up mail clients (setup.go).
	Autoconfig  clientsetup.Autoconfig  `yaml:"autoconfig,omitempty"`
	Thunderbird clientsetup.Thunderbird `yaml:"thunderbird,omitempty"`

	path         string // the file it was loaded from
	tls          *tls.Config
	upTLS        *tls.Config
	password     string
	clientSecret string
	proxies      []netip.Prefix
	// outboxDir is set by "smtpgate dev" only: no configuration key
	// mounts the Outbox pages.
	outboxDir string
}

// WebConfig is the web app where people sign in and create app tokens.
type WebConfig struct {
	Listen           string        `yaml:"listen,omitempty"`   // "" disables the web app
	BaseURL          string        `yaml:"base_url,omitempty"` // the callback is base_url + /auth/callback
	ClientID         string        `yaml:"client_id,omitempty"`
	ClientSecretFile string        `yaml:"client_secret_file,omitempty"` // none: a public client (PKCE only)
	Issuer           string        `yaml:"issuer,omitempty"`             // default the first oidc issuer
	SessionTTL       time.Duration `yaml:"session_ttl,omitempty"`        // default 1h
	ReauthAge        time.Duration `yaml:"reauth_age,omitempty"`         // default 10m: creating a token needs a sign-in this recent
	RequiredACR      string        `yaml:"required_acr,omitempty"`       // the ID token's acr must be this (e.g. MFA); sent as acr_values
	TrustedProxies   []string      `yaml:"trusted_proxies,omitempty"`    // IPs or CIDRs of reverse proxies whose X-Forwarded-For names the client
}

// StoreConfig is the database of app tokens.
type StoreConfig struct {
	Driver string `yaml:"driver,omitempty"` // sqlite
	DSN    string `yaml:"dsn,omitempty"`    // for sqlite, a file path
}

// TokensConfig shapes app tokens.
type TokensConfig struct {
	Prefix     string        `yaml:"prefix,omitempty"`       // default "smtpgate"; teach secret scanners <prefix>_[0-9A-Za-z]{50}
	DefaultTTL time.Duration `yaml:"default_ttl,omitempty"`  // default 2160h (90 days)
	MaxTTL     time.Duration `yaml:"max_ttl,omitempty"`      // default 8760h (365 days)
	KeyFile    string        `yaml:"key_file,omitempty"`     // HMAC key for stored tokens and web cookies; serve creates it for a new store
	MaxPerUser int           `yaml:"max_per_user,omitempty"` // live tokens per person; default 20
}

// appTokens reports whether app tokens (and so PLAIN/LOGIN and the web
// app) are configured.
func (c *Config) appTokens() bool { return c.Store.DSN != "" }

type SMTPConfig struct {
	Hostname          string        `yaml:"hostname,omitempty"`
	Submission        *string       `yaml:"submission,omitempty"`  // STARTTLS listener, default ":587"; "" disables
	Submissions       *string       `yaml:"submissions,omitempty"` // implicit TLS listener, default ":465"; "" disables
	TLS               TLSFiles      `yaml:"tls,omitempty"`
	AllowInsecureAuth bool          `yaml:"allow_insecure_auth,omitempty"`
	MaxMessageBytes   int64         `yaml:"max_message_bytes,omitempty"`  // default 25 MiB
	MaxRecipients     int           `yaml:"max_recipients,omitempty"`     // default 100
	MaxLineLength     int           `yaml:"max_line_length,omitempty"`    // default 64 KiB, at least 32 KiB
	MaxHeaderBytes    int           `yaml:"max_header_bytes,omitempty"`   // default 1 MiB
	ReadTimeout       time.Duration `yaml:"read_timeout,omitempty"`       // default 5m
	WriteTimeout      time.Duration `yaml:"write_timeout,omitempty"`      // default 1m
	MaxAuthFailures   int           `yaml:"max_auth_failures,omitempty"`  // default 3
	AuthTimeout       time.Duration `yaml:"auth_timeout,omitempty"`       // default 30s
	AuthFailureDelay  time.Duration `yaml:"auth_failure_delay,omitempty"` // default 1s; negative disables

	MaxConns                   int           `yaml:"max_conns,omitempty"`                     // default 10000
	MaxConnsPerClient          int           `yaml:"max_conns_per_client,omitempty"`          // default 1000; IPv6 per /64
	MaxUnauthCommands          int           `yaml:"max_unauth_commands,omitempty"`           // default 30
	MaxTransactionsPerIdentity int           `yaml:"max_transactions_per_identity,omitempty"` // default 10
	TransactionTimeout         time.Duration `yaml:"transaction_timeout,omitempty"`           // MAIL to end of DATA; default 30m
	PreAuthTimeout             time.Duration `yaml:"pre_auth_timeout,omitempty"`              // connect to AUTH; default 10m
	MaxSessionDuration         time.Duration `yaml:"max_session_duration,omitempty"`          // default 1h
}

type TLSFiles struct {
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
}

type OIDCConfig struct {
	Issuers       []IssuerConfig `yaml:"issuers,omitempty"`
	Leeway        time.Duration  `yaml:"leeway,omitempty"`          // default 60s
	MinKeyRefresh time.Duration  `yaml:"min_key_refresh,omitempty"` // default 1m
	KeyMaxAge     time.Duration  `yaml:"key_max_age,omitempty"`     // default 1h
	CacheSize     int            `yaml:"cache_size,omitempty"`      // default 10000; negative disables
}

type IssuerConfig struct {
	Issuer         string   `yaml:"issuer,omitempty"`
	DiscoveryURL   string   `yaml:"discovery_url,omitempty"`
	Audiences      []string `yaml:"audiences,omitempty"`
	RequiredScopes []string `yaml:"required_scopes,omitempty"`
	ClientIDs      []string `yaml:"client_ids,omitempty"`
	RequireATJWT   bool     `yaml:"require_at_jwt,omitempty"`
	IdentityClaim  string   `yaml:"identity_claim,omitempty"` // default "email"
	AliasesClaim   string   `yaml:"aliases_claim,omitempty"`
	Algorithms     []string `yaml:"algorithms,omitempty"`
}

type UpstreamConfig struct {
	Addr           string        `yaml:"addr,omitempty"`
	TLS            string        `yaml:"tls,omitempty"`         // none | starttls | tls; default starttls
	CAFile         string        `yaml:"ca_file,omitempty"`     // PEM roots for the upstream; default the system's
	ServerName     string        `yaml:"server_name,omitempty"` // default the host of addr
	Username       string        `yaml:"username,omitempty"`
	PasswordFile   string        `yaml:"password_file,omitempty"`
	DialTimeout    time.Duration `yaml:"dial_timeout,omitempty"`    // default 30s
	CommandTimeout time.Duration `yaml:"command_timeout,omitempty"` // default 5m
	MaxIdle        int           `yaml:"max_idle,omitempty"`        // default 8
	IdleTimeout    time.Duration `yaml:"idle_timeout,omitempty"`    // default 30s
	MaxConns       int           `yaml:"max_conns,omitempty"`       // default 100
}

type LogConfig struct {
	Level  string `yaml:"level,omitempty"`  // debug | info | warn | error; default info
	Format string `yaml:"format,omitempty"` // auto | text | json; auto is text on a terminal

	level slog.Level
}

// loadConfig reads the file at path and builds the config from it with
// buildConfig: serve, check-config, dev and the token commands all take
// this one path. The error lists every problem at once.
func loadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := buildConfig(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.path = path
	return cfg, nil
}

// parseConfig is buildConfig for a reader, with paths relative to the
// current directory: for tests.
func parseConfig(r io.Reader) (*Config, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return buildConfig(b, ".")
}

// buildConfig decodes data, applies the defaults, validates (pure),
// resolves relative paths against dir (the config file's directory), then
// loads the files the config names and checks them. Unknown keys and
// type errors are problems like any other: every one is reported,
// together with the rest.
func buildConfig(data []byte, dir string) (*Config, error) {
	cfg, problems := decodeConfig(data)
	if cfg == nil {
		return nil, errors.Join(problems...)
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		problems = append(problems, err)
	}
	cfg.resolvePaths(dir)
	if err := cfg.load(); err != nil {
		problems = append(problems, err)
	}
	if err := errors.Join(problems...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decodeConfig decodes leniently, so that every field that can be read
// is, and reports each unknown key and each value of the wrong type as a
// problem. It returns nil only for a document that is not YAML at all.
func decodeConfig(data []byte) (*Config, []error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, []error{err}
	}
	if len(root.Content) == 0 {
		return nil, []error{errors.New("empty file")}
	}
	var problems []error
	unknownKeys(root.Content[0], reflect.TypeFor[Config](), "", &problems)
	var cfg Config
	if err := root.Content[0].Decode(&cfg); err != nil {
		if te, ok := errors.AsType[*yaml.TypeError](err); ok {
			for _, e := range te.Errors {
				problems = append(problems, errors.New(e))
			}
		} else {
			problems = append(problems, err)
		}
	}
	return &cfg, problems
}

// unknownKeys walks a mapping node along the struct type t and reports
// keys no field has.
func unknownKeys(n *yaml.Node, t reflect.Type, prefix string, problems *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, c := range n.Content {
			unknownKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", strings.TrimSuffix(prefix, "."), i)+".", problems)
		}
		return
	case n.Kind != yaml.MappingNode || t.Kind() != reflect.Struct || t == reflect.TypeFor[time.Duration]():
		return
	}
	fields := make(map[string]reflect.Type)
	for f := range t.Fields() {
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag != "" && tag != "-" {
			fields[tag] = f.Type
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		ft, ok := fields[k.Value]
		if !ok {
			*problems = append(*problems, fmt.Errorf("line %d: unknown key %s%s", k.Line, prefix, k.Value))
			continue
		}
		unknownKeys(n.Content[i+1], ft, prefix+k.Value+".", problems)
	}
}

func strp(s string) *string { return &s }

// setDefaults fills the defaults this command owns. The packages fill
// their own (gateway, oidc, web, store), each in one place; the token
// lifetimes come from store, which the web app and the CLI share.
func (c *Config) setDefaults() {
	if c.SMTP.Submission == nil {
		c.SMTP.Submission = strp(":587")
	}
	if c.SMTP.Submissions == nil {
		c.SMTP.Submissions = strp(":465")
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Upstream.TLS == "" {
		c.Upstream.TLS = string(gateway.UpstreamTLSStartTLS)
	}
	if c.Store.Driver == "" {
		c.Store.Driver = "sqlite"
	}
	if c.Tokens.Prefix == "" {
		c.Tokens.Prefix = store.DefaultPrefix
	}
	if c.Tokens.DefaultTTL == 0 {
		c.Tokens.DefaultTTL = store.DefaultTTL
	}
	if c.Tokens.MaxTTL == 0 {
		c.Tokens.MaxTTL = store.DefaultMaxTTL
	}
	if c.Web.Issuer == "" && len(c.OIDC.Issuers) > 0 {
		c.Web.Issuer = c.OIDC.Issuers[0].Issuer
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug":
		c.Log.level = slog.LevelDebug
	case "warn":
		c.Log.level = slog.LevelWarn
	case "error":
		c.Log.level = slog.LevelError
	default:
		c.Log.level = slog.LevelInfo
	}
}

// Validate checks the config without touching any file, collecting
// every problem: its own keys, then each package's Validate.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if c.SMTP.Hostname == "" {
		add("smtp.hostname is required")
	}
	if *c.SMTP.Submission == "" && *c.SMTP.Submissions == "" {
		add("smtp: both listeners are disabled; set smtp.submission or smtp.submissions")
	}
	for _, l := range []struct{ key, addr string }{{"smtp.submission", *c.SMTP.Submission}, {"smtp.submissions", *c.SMTP.Submissions}} {
		if l.addr != "" {
			if _, _, err := net.SplitHostPort(l.addr); err != nil {
				add("%s %q: %v", l.key, l.addr, err)
			}
		}
	}
	switch t := c.SMTP.TLS; {
	case (t.CertFile == "") != (t.KeyFile == ""):
		add("smtp.tls.cert_file and key_file go together")
	case t.CertFile != "":
	case *c.SMTP.Submissions != "":
		add("smtp.tls.cert_file and key_file are required for the submissions (implicit TLS) listener")
	case !c.SMTP.AllowInsecureAuth:
		add("smtp.tls.cert_file and key_file are required unless smtp.allow_insecure_auth is true")
	}
	if c.SMTP.MaxMessageBytes < 0 || c.SMTP.MaxRecipients < 0 || c.SMTP.MaxAuthFailures < 0 || c.SMTP.MaxLineLength < 0 || c.SMTP.MaxHeaderBytes < 0 {
		add("smtp: limits must not be negative")
	}
	if s := c.SMTP; s.MaxConns < 0 || s.MaxConnsPerClient < 0 || s.MaxUnauthCommands < 0 || s.MaxTransactionsPerIdentity < 0 ||
		s.TransactionTimeout < 0 || s.PreAuthTimeout < 0 || s.MaxSessionDuration < 0 {
		add("smtp: connection limits and timeouts must not be negative")
	}
	if c.SMTP.ReadTimeout < 0 || c.SMTP.WriteTimeout < 0 || c.SMTP.AuthTimeout < 0 {
		add("smtp: timeouts must not be negative")
	}
	if c.ShutdownTimeout < 0 {
		add("shutdown_timeout %v is negative", c.ShutdownTimeout)
	}
	if err := c.provisionSetup(); err != nil {
		errs = append(errs, err)
	}
	if err := c.oidcConfig(nil).Validate(); err != nil {
		errs = append(errs, err)
	}

	u := c.Upstream
	if u.Addr == "" {
		add("upstream.addr is required")
	} else if _, _, err := net.SplitHostPort(u.Addr); err != nil {
		add("upstream.addr %q: %v", u.Addr, err)
	}
	switch u.TLS {
	case "none", "starttls", "tls":
	default:
		add("upstream.tls %q: want none, starttls or tls", u.TLS)
	}
	if (u.Username == "") != (u.PasswordFile == "") {
		add("upstream.username and upstream.password_file go together")
	}
	if u.DialTimeout < 0 || u.CommandTimeout < 0 || u.IdleTimeout < 0 || u.MaxIdle < 0 || u.MaxConns < 0 {
		add("upstream: timeouts and limits must not be negative")
	}

	if c.Store.Driver != "sqlite" {
		add("store.driver %q: only sqlite is supported so far", c.Store.Driver)
	}
	t := c.Tokens
	if err := c.storeOptions().Validate(); err != nil {
		add("tokens: %w", err)
	}
	if t.DefaultTTL < 0 || t.MaxTTL < 0 {
		add("tokens: default_ttl and max_ttl must not be negative")
	} else if t.DefaultTTL > t.MaxTTL {
		add("tokens.default_ttl %v exceeds tokens.max_ttl %v", t.DefaultTTL, t.MaxTTL)
	}
	if c.appTokens() && t.KeyFile == "" {
		add("tokens.key_file is required with a store")
	}

	w := c.Web
	if w.Listen != "" {
		if _, _, err := net.SplitHostPort(w.Listen); err != nil {
			add("web.listen %q: %v", w.Listen, err)
		}
		if !c.appTokens() {
			add("web: the web app needs store.dsn for its app tokens")
		}
		if c.webIssuer() == nil {
			add("web.issuer %q is not one of oidc.issuers", w.Issuer)
		}
		if err := c.webSettings().Validate(); err != nil {
			errs = append(errs, err)
		}
		if _, err := parseProxies(w.TrustedProxies); err != nil {
			add("web.trusted_proxies: %w", err)
		}
	}

	switch strings.ToLower(c.Log.Level) {
	case "", "debug", "info", "warn", "error":
	default:
		add("log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "auto", "text", "json":
	default:
		add("log.format %q: want auto, text or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

// resolvePaths makes the file paths of the config absolute, relative to
// dir, the config file's directory: the CLI run from anywhere finds the
// same store and key as the server.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if d, err := filepath.Abs(dir); err == nil {
		dir = d
	}
	abs(&c.SMTP.TLS.CertFile)
	abs(&c.SMTP.TLS.KeyFile)
	abs(&c.Upstream.CAFile)
	abs(&c.Upstream.PasswordFile)
	abs(&c.Tokens.KeyFile)
	abs(&c.Web.ClientSecretFile)
	if c.Store.Driver == "sqlite" && !strings.HasPrefix(c.Store.DSN, "file:") {
		abs(&c.Store.DSN)
	}
}

// load reads the files the config names and checks them: certificates,
// the upstream CA and password, the web client secret, and the token key
// (its mode and length; serve creates it for a new store only).
func (c *Config) load() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if t := c.SMTP.TLS; t.CertFile != "" && t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			add("smtp.tls: %w", err)
		} else {
			c.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
	}
	u := c.Upstream
	if u.TLS != "none" {
		host, _, _ := net.SplitHostPort(u.Addr)
		c.upTLS = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if u.ServerName != "" {
			c.upTLS.ServerName = u.ServerName
		}
		if u.CAFile != "" {
			pem, err := os.ReadFile(u.CAFile)
			pool := x509.NewCertPool()
			if err != nil {
				add("upstream.ca_file: %w", err)
			} else if !pool.AppendCertsFromPEM(pem) {
				add("upstream.ca_file %s: no PEM certificates", u.CAFile)
			}
			c.upTLS.RootCAs = pool
		}
	}
	if u.PasswordFile != "" {
		b, err := os.ReadFile(u.PasswordFile)
		if err != nil {
			add("upstream.password_file: %w", err)
		}
		c.password = strings.TrimRight(string(b), "\r\n")
	}
	if c.Web.Listen != "" && c.Web.ClientSecretFile != "" {
		b, err := os.ReadFile(c.Web.ClientSecretFile)
		if err != nil {
			add("web.client_secret_file: %w", err)
		}
		c.clientSecret = strings.TrimSpace(string(b))
	}
	c.proxies, _ = parseProxies(c.Web.TrustedProxies)
	if c.appTokens() && c.Tokens.KeyFile != "" {
		_, err := store.ReadKey(c.Tokens.KeyFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if _, serr := os.Stat(c.Store.DSN); serr == nil {
				add("tokens.key_file %s does not exist, but the database %s does: restore the key file it was used with (a new key would invalidate every app token)", c.Tokens.KeyFile, c.Store.DSN)
			}
		case err != nil:
			add("tokens.key_file: %w", err)
		}
	}
	return errors.Join(errs...)
}

// parseProxies reads web.trusted_proxies: addresses or CIDR prefixes.
func parseProxies(l []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range l {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		} else {
			errs = append(errs, fmt.Errorf("%q is neither an IP address nor a CIDR prefix", s))
		}
	}
	return out, errors.Join(errs...)
}

func (c *Config) storeOptions() store.Options {
	return store.Options{Prefix: c.Tokens.Prefix, MaxLivePerUser: c.Tokens.MaxPerUser}
}

// webIssuer is the oidc issuer the web app signs people in with.
func (c *Config) webIssuer() *IssuerConfig {
	for i := range c.OIDC.Issuers {
		if c.OIDC.Issuers[i].Issuer == c.Web.Issuer {
			return &c.OIDC.Issuers[i]
		}
	}
	return nil
}

func (c *Config) oidcConfig(log *slog.Logger) oidc.Config {
	oc := oidc.Config{
		Leeway:        c.OIDC.Leeway,
		MinKeyRefresh: c.OIDC.MinKeyRefresh,
		KeyMaxAge:     c.OIDC.KeyMaxAge,
		CacheSize:     c.OIDC.CacheSize,
		Logger:        log,
	}
	for _, is := range c.OIDC.Issuers {
		oc.Issuers = append(oc.Issuers, oidc.IssuerConfig(is))
	}
	return oc
}

func (c *Config) gatewayConfig(tokens gateway.TokenVerifier, log *slog.Logger) gateway.Config {
	s, u := c.SMTP, c.Upstream
	return gateway.Config{
		Hostname:          s.Hostname,
		TLSConfig:         c.tls,
		AllowInsecureAuth: s.AllowInsecureAuth,
		MaxMessageBytes:   s.MaxMessageBytes,
		MaxRecipients:     s.MaxRecipients,
		MaxLineLength:     s.MaxLineLength,
		MaxHeaderBytes:    s.MaxHeaderBytes,
		ReadTimeout:       s.ReadTimeout,
		WriteTimeout:      s.WriteTimeout,
		MaxAuthFailures:   s.MaxAuthFailures,
		AuthTimeout:       s.AuthTimeout,
		AuthFailureDelay:  s.AuthFailureDelay,
		Tokens:            tokens,

		MaxConns:                   s.MaxConns,
		MaxConnsPerClient:          s.MaxConnsPerClient,
		MaxUnauthCommands:          s.MaxUnauthCommands,
		MaxTransactionsPerIdentity: s.MaxTransactionsPerIdentity,
		TransactionTimeout:         s.TransactionTimeout,
		PreAuthTimeout:             s.PreAuthTimeout,
		MaxSessionDuration:         s.MaxSessionDuration,
		Upstream: gateway.UpstreamConfig{
			Addr:           u.Addr,
			TLS:            gateway.UpstreamTLS(u.TLS),
			TLSConfig:      c.upTLS,
			Username:       u.Username,
			Password:       c.password,
			DialTimeout:    u.DialTimeout,
			CommandTimeout: u.CommandTimeout,
			MaxIdle:        u.MaxIdle,
			IdleTimeout:    u.IdleTimeout,
			MaxConns:       u.MaxConns,
		},
		Logger: log,
	}
}
