package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/smtpgate/smtpgate/clientsetup"
	"github.com/smtpgate/smtpgate/gateway"
	"github.com/smtpgate/smtpgate/oidc"
)

// Config is smtpgate's YAML configuration. Keys are snake_case; durations
// are written "30s"; secrets come from files.
type Config struct {
	SMTP            SMTPConfig     `yaml:"smtp"`
	OIDC            OIDCConfig     `yaml:"oidc"`
	Upstream        UpstreamConfig `yaml:"upstream"`
	Web             WebConfig      `yaml:"web"`
	Store           StoreConfig    `yaml:"store"`
	Tokens          TokensConfig   `yaml:"tokens"`
	Log             LogConfig      `yaml:"log"`
	ShutdownTimeout time.Duration  `yaml:"shutdown_timeout"` // default 30s

	// Autoconfig and Thunderbird set up mail clients (setup.go).
	Autoconfig  clientsetup.Autoconfig  `yaml:"autoconfig"`
	Thunderbird clientsetup.Thunderbird `yaml:"thunderbird"`

	path         string
	tls          *tls.Config
	upTLS        *tls.Config
	password     string
	clientSecret string
}

// WebConfig is the web app where people sign in and create app tokens.
type WebConfig struct {
	Listen           string        `yaml:"listen"`   // "" disables the web app
	BaseURL          string        `yaml:"base_url"` // the callback is base_url + /auth/callback
	ClientID         string        `yaml:"client_id"`
	ClientSecretFile string        `yaml:"client_secret_file"` // none: a public client (PKCE only)
	Issuer           string        `yaml:"issuer"`             // default the first oidc issuer
	SessionTTL       time.Duration `yaml:"session_ttl"`        // default 1h
	ReauthAge        time.Duration `yaml:"reauth_age"`         // default 10m: creating a token needs a sign-in this recent
	OutboxDir        string        `yaml:"outbox_dir"`         // dev only: show the messages the dev upstream filed here
}

// StoreConfig is the database of app tokens.
type StoreConfig struct {
	Driver string `yaml:"driver"` // sqlite
	DSN    string `yaml:"dsn"`    // for sqlite, a file path
}

// TokensConfig shapes app tokens.
type TokensConfig struct {
	Prefix     string        `yaml:"prefix"`       // default "smtpgate"; teach secret scanners <prefix>_[0-9A-Za-z]{50}
	DefaultTTL time.Duration `yaml:"default_ttl"`  // default 2160h (90 days)
	MaxTTL     time.Duration `yaml:"max_ttl"`      // default 8760h (365 days)
	KeyFile    string        `yaml:"key_file"`     // HMAC key for stored tokens and web cookies; created if missing
	MaxPerUser int           `yaml:"max_per_user"` // live tokens per person; default 20
}

// appTokens reports whether app tokens (and so PLAIN/LOGIN and the web
// app) are configured.
func (c *Config) appTokens() bool { return c.Store.DSN != "" }

type SMTPConfig struct {
	Hostname          string        `yaml:"hostname"`
	Submission        *string       `yaml:"submission"`  // STARTTLS listener, default ":587"; "" disables
	Submissions       *string       `yaml:"submissions"` // implicit TLS listener, default ":465"; "" disables
	TLS               TLSFiles      `yaml:"tls"`
	AllowInsecureAuth bool          `yaml:"allow_insecure_auth"`
	MaxMessageBytes   int64         `yaml:"max_message_bytes"`  // default 25 MiB
	MaxRecipients     int           `yaml:"max_recipients"`     // default 100
	MaxLineLength     int           `yaml:"max_line_length"`    // default 64 KiB, at least 32 KiB
	MaxHeaderBytes    int           `yaml:"max_header_bytes"`   // default 1 MiB
	ReadTimeout       time.Duration `yaml:"read_timeout"`       // default 5m
	WriteTimeout      time.Duration `yaml:"write_timeout"`      // default 1m
	MaxAuthFailures   int           `yaml:"max_auth_failures"`  // default 3
	AuthTimeout       time.Duration `yaml:"auth_timeout"`       // default 30s
	AuthFailureDelay  time.Duration `yaml:"auth_failure_delay"` // default 1s; negative disables

	MaxConns                   int           `yaml:"max_conns"`                     // default 10000
	MaxConnsPerClient          int           `yaml:"max_conns_per_client"`          // default 1000; IPv6 per /64
	MaxUnauthCommands          int           `yaml:"max_unauth_commands"`           // default 30
	MaxTransactionsPerIdentity int           `yaml:"max_transactions_per_identity"` // default 10
	TransactionTimeout         time.Duration `yaml:"transaction_timeout"`           // MAIL to end of DATA; default 30m
	PreAuthTimeout             time.Duration `yaml:"pre_auth_timeout"`              // connect to AUTH; default 10m
	MaxSessionDuration         time.Duration `yaml:"max_session_duration"`          // default 1h
}

type TLSFiles struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type OIDCConfig struct {
	Issuers       []IssuerConfig `yaml:"issuers"`
	Leeway        time.Duration  `yaml:"leeway"`          // default 60s
	MinKeyRefresh time.Duration  `yaml:"min_key_refresh"` // default 1m
	KeyMaxAge     time.Duration  `yaml:"key_max_age"`     // default 1h
	CacheSize     int            `yaml:"cache_size"`      // default 10000; negative disables
}

type IssuerConfig struct {
	Issuer         string   `yaml:"issuer"`
	DiscoveryURL   string   `yaml:"discovery_url"`
	Audiences      []string `yaml:"audiences"`
	RequiredScopes []string `yaml:"required_scopes"`
	ClientIDs      []string `yaml:"client_ids"`
	RequireATJWT   bool     `yaml:"require_at_jwt"`
	IdentityClaim  string   `yaml:"identity_claim"` // default "email"
	AliasesClaim   string   `yaml:"aliases_claim"`
	Algorithms     []string `yaml:"algorithms"`
}

type UpstreamConfig struct {
	Addr           string        `yaml:"addr"`
	TLS            string        `yaml:"tls"`         // none | starttls | tls; default starttls
	CAFile         string        `yaml:"ca_file"`     // PEM roots for the upstream; default the system's
	ServerName     string        `yaml:"server_name"` // default the host of addr
	Username       string        `yaml:"username"`
	PasswordFile   string        `yaml:"password_file"`
	DialTimeout    time.Duration `yaml:"dial_timeout"`    // default 30s
	CommandTimeout time.Duration `yaml:"command_timeout"` // default 5m
	MaxIdle        int           `yaml:"max_idle"`        // default 8
	IdleTimeout    time.Duration `yaml:"idle_timeout"`    // default 30s
	MaxConns       int           `yaml:"max_conns"`       // default 100
}

type LogConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error; default info
	Format string `yaml:"format"` // auto | text | json; auto is text on a terminal

	level slog.Level
}

// loadConfig reads, decodes strictly and validates the file at path. The
// error lists every problem at once.
func loadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	cfg, err := parseConfig(f)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.path = path
	return cfg, nil
}

func parseConfig(r io.Reader) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty file")
		}
		return nil, err
	}
	if err := cfg.provision(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func strp(s string) *string { return &s }

// provision fills defaults, loads the files the config names, and checks
// everything, collecting every problem.
func (c *Config) provision() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if c.SMTP.Submission == nil {
		c.SMTP.Submission = strp(":587")
	}
	if c.SMTP.Submissions == nil {
		c.SMTP.Submissions = strp(":465")
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.SMTP.Hostname == "" {
		add("smtp.hostname is required")
	}
	if *c.SMTP.Submission == "" && *c.SMTP.Submissions == "" {
		add("smtp: both listeners are disabled; set smtp.submission or smtp.submissions")
	}
	for key, addr := range map[string]string{"smtp.submission": *c.SMTP.Submission, "smtp.submissions": *c.SMTP.Submissions} {
		if addr != "" {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				add("%s %q: %v", key, addr, err)
			}
		}
	}
	switch t := c.SMTP.TLS; {
	case t.CertFile != "" || t.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			add("smtp.tls: %w", err)
		} else {
			c.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
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

	if err := c.oidcConfig(nil).Validate(); err != nil {
		errs = append(errs, err)
	}

	u := &c.Upstream
	if u.Addr == "" {
		add("upstream.addr is required")
	} else if _, _, err := net.SplitHostPort(u.Addr); err != nil {
		add("upstream.addr %q: %v", u.Addr, err)
	}
	switch u.TLS {
	case "":
		u.TLS = string(gateway.UpstreamTLSStartTLS)
	case "none", "starttls", "tls":
	default:
		add("upstream.tls %q: want none, starttls or tls", u.TLS)
	}
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
	if (u.Username == "") != (u.PasswordFile == "") {
		add("upstream.username and upstream.password_file go together")
	} else if u.PasswordFile != "" {
		b, err := os.ReadFile(u.PasswordFile)
		if err != nil {
			add("upstream.password_file: %w", err)
		}
		c.password = strings.TrimRight(string(b), "\r\n")
	}

	c.provisionTokens(add)
	if err := c.provisionSetup(); err != nil {
		errs = append(errs, err)
	}

	switch strings.ToLower(c.Log.Level) {
	case "", "info":
		c.Log.level = slog.LevelInfo
	case "debug":
		c.Log.level = slog.LevelDebug
	case "warn":
		c.Log.level = slog.LevelWarn
	case "error":
		c.Log.level = slog.LevelError
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

func (c *Config) provisionTokens(add func(string, ...any)) {
	if c.Store.Driver == "" {
		c.Store.Driver = "sqlite"
	}
	if c.Store.Driver != "sqlite" {
		add("store.driver %q: only sqlite is supported so far", c.Store.Driver)
	}
	t := &c.Tokens
	if t.Prefix == "" {
		t.Prefix = "smtpgate"
	}
	if t.DefaultTTL == 0 {
		t.DefaultTTL = 90 * 24 * time.Hour
	}
	if t.MaxTTL == 0 {
		t.MaxTTL = 365 * 24 * time.Hour
	}
	if t.DefaultTTL > t.MaxTTL {
		add("tokens.default_ttl %v exceeds tokens.max_ttl %v", t.DefaultTTL, t.MaxTTL)
	}
	if c.appTokens() && t.KeyFile == "" {
		add("tokens.key_file is required with a store")
	}
	w := &c.Web
	if w.Listen == "" {
		return
	}
	if _, _, err := net.SplitHostPort(w.Listen); err != nil {
		add("web.listen %q: %v", w.Listen, err)
	}
	if !c.appTokens() {
		add("web: the web app needs store.dsn for its app tokens")
	}
	if w.BaseURL == "" {
		add("web.base_url is required")
	}
	if w.ClientID == "" {
		add("web.client_id is required")
	}
	if w.Issuer == "" && len(c.OIDC.Issuers) > 0 {
		w.Issuer = c.OIDC.Issuers[0].Issuer
	}
	if c.webIssuer() == nil {
		add("web.issuer %q is not one of oidc.issuers", w.Issuer)
	}
	if w.ClientSecretFile != "" {
		b, err := os.ReadFile(w.ClientSecretFile)
		if err != nil {
			add("web.client_secret_file: %w", err)
		}
		c.clientSecret = strings.TrimSpace(string(b))
	}
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
