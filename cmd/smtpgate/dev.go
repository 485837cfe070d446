package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/smtpgate/smtpgate/clientsetup"
	"github.com/smtpgate/smtpgate/mailaddr"
	"github.com/smtpgate/smtpgate/oidc/devprovider"
	"github.com/smtpgate/smtpgate/outbox"
	"github.com/smtpgate/smtpgate/store"
	"github.com/smtpgate/smtpgate/web"
)

// devAddrs are the loopback addresses "smtpgate dev" uses, one flag each.
type devAddrs struct {
	Submission, Submissions, Web, IdP, Upstream string
}

func defaultDevAddrs() devAddrs {
	return devAddrs{
		Submission:  "127.0.0.1:2587",
		Submissions: "127.0.0.1:2465",
		Web:         "127.0.0.1:8080",
		IdP:         "127.0.0.1:8081",
		Upstream:    "127.0.0.1:2525",
	}
}

// The demo person of dev mode.
const (
	devUser     = "alice"
	devPassword = "alice"
	devMailbox  = "alice@example.com"
	devAlias    = "team@example.com"
	devMarker   = ".smtpgate-dev"
)

// devCmd runs the whole product on loopback: the development OpenID
// provider with a demo user, the gateway with a self-signed certificate,
// the web app, and an upstream that files every message under the data
// directory. It is configuration, not a second code path: it writes
// smtpgate.yaml into the data directory and runs serve with that file.
func devCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data", "smtpgate-dev", "the `directory` that keeps state across restarts")
	reset := fs.Bool("reset", false, "delete what dev made in the data directory first (refused if it holds anything else)")
	allowNonLoopback := fs.Bool("allow-non-loopback", false, "allow addresses other than loopback ones (the provider has a known password, the Outbox shows every message)")
	printConfig := fs.Bool("print-config", false, "print the equivalent YAML config and exit")
	a := defaultDevAddrs()
	fs.StringVar(&a.Submission, "submission", a.Submission, "SMTP submission (STARTTLS) `address`")
	fs.StringVar(&a.Submissions, "submissions", a.Submissions, "SMTP submissions (implicit TLS) `address`")
	fs.StringVar(&a.Web, "web", a.Web, "web app `address`")
	fs.StringVar(&a.IdP, "idp", a.IdP, "development OpenID provider `address`")
	fs.StringVar(&a.Upstream, "upstream", a.Upstream, "built-in upstream MTA `address`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dev: unexpected argument %q", fs.Arg(0))
	}
	yaml, err := devConfig(*dir, a)
	if err != nil {
		return err
	}
	if *printConfig {
		_, err := io.WriteString(stdout, yaml)
		return err
	}
	if !*allowNonLoopback {
		if err := a.checkLoopback(); err != nil {
			return err
		}
	}
	if *reset {
		if err := resetDataDir(*dir); err != nil {
			return err
		}
	}
	if err := checkDataDir(*dir); err != nil {
		return err
	}
	if err := prepareDataDir(*dir); err != nil {
		return err
	}
	path := filepath.Join(*dir, "smtpgate.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	// The Outbox pages are mounted here and only here: no configuration
	// key can expose them on a production server.
	cfg.outboxDir = filepath.Join(*dir, "outbox")
	log := newLogger(stderr, cfg.Log)

	// The gateway's own listeners are opened by serve; checking them here
	// first lets the error name the flag to change.
	for _, p := range []struct{ flag, addr string }{{"-submission", a.Submission}, {"-submissions", a.Submissions}, {"-web", a.Web}} {
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			return fmt.Errorf("dev: %s %s: %w (pass %s ADDR to use another)", p.flag, p.addr, err, p.flag)
		}
		l.Close()
	}
	idp, err := startDevIdP(*dir, a, *allowNonLoopback, log)
	if err != nil {
		return err
	}
	defer idp.close()
	ob, err := startOutbox(*dir, a.Upstream, log)
	if err != nil {
		return err
	}
	defer ob.Close()

	appToken, err := demoAppToken(ctx, cfg, *dir, log)
	if err != nil {
		return err
	}
	access, err := idp.p.AccessToken(devUser, nil)
	if err != nil {
		return fmt.Errorf("dev: mint a token: %w", err)
	}
	return serve(ctx, cfg, stderr, func() {
		printDevHelp(stdout, *dir, a, access, appToken)
	})
}

// checkLoopback refuses addresses other than loopback ones: the
// provider's password is printed and the Outbox shows every message.
func (a devAddrs) checkLoopback() error {
	var errs []error
	for _, f := range []struct{ flag, addr string }{{"-submission", a.Submission}, {"-submissions", a.Submissions}, {"-web", a.Web}, {"-idp", a.IdP}, {"-upstream", a.Upstream}} {
		host, _, err := net.SplitHostPort(f.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("dev: %s %q: %w", f.flag, f.addr, err))
			continue
		}
		if ip, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !ip.IsLoopback()) {
			errs = append(errs, fmt.Errorf("dev: %s %s is not a loopback address; dev mode has a known password and shows every message, so it listens on loopback only (pass -allow-non-loopback to override)", f.flag, f.addr))
		}
	}
	return errors.Join(errs...)
}

// devConfig is dev mode's whole configuration, built as a value and
// marshalled: edit the printed copy to move to a real deployment. Paths
// are relative to the config file, which dev writes into dir.
func devConfig(dir string, a devAddrs) (string, error) {
	cfg := Config{
		SMTP: SMTPConfig{
			Hostname:    "localhost",
			Submission:  strp(a.Submission),
			Submissions: strp(a.Submissions),
			TLS:         TLSFiles{CertFile: "tls.crt", KeyFile: "tls.key"},
		},
		OIDC: OIDCConfig{Issuers: []IssuerConfig{{
			Issuer: "http://" + a.IdP, Audiences: []string{devprovider.DefaultAudience}, AliasesClaim: "aliases",
		}}},
		Upstream: UpstreamConfig{Addr: a.Upstream, TLS: "none"},
		Store:    StoreConfig{Driver: "sqlite", DSN: "smtpgate.db"},
		Tokens:   TokensConfig{KeyFile: "token.key"},
		Web: WebConfig{
			Listen: a.Web, BaseURL: "http://" + a.Web, ClientID: "smtpgate-web", ClientSecretFile: "web-client-secret",
		},
		// Thunderbird's autoconfig for the demo domain, and the generated
		// add-on for the development provider's "thunderbird" client.
		Autoconfig:      clientsetup.Autoconfig{Domains: []string{"example.com"}},
		Thunderbird:     clientsetup.Thunderbird{ClientID: "thunderbird", Scopes: []string{"openid", "email", "offline_access"}},
		Log:             LogConfig{Level: "info", Format: "auto"},
		ShutdownTimeout: 10 * time.Second,
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# smtpgate dev: everything on loopback; paths are relative to this file,\n"+
		"# which dev keeps in %s/. For production, point oidc at your IdP,\n"+
		"# upstream at your MTA, and give smtp.tls a real certificate.\n", dir)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&cfg); err != nil {
		return "", fmt.Errorf("dev: config: %w", err)
	}
	return b.String(), enc.Close()
}

// devFiles are the names dev makes in its data directory: -reset deletes
// these and nothing else.
var devFiles = []string{
	devMarker, "smtpgate.yaml", "tls.crt", "tls.key", "idp.key", "web-client-secret", "hello.eml",
	"demo-app-token", "token.key", "smtpgate.db", "smtpgate.db-wal", "smtpgate.db-shm", "smtpgate.db-journal", "outbox",
}

func isDevFile(name string) bool {
	return slices.Contains(devFiles, name) || strings.HasPrefix(name, ".key-") && strings.HasSuffix(name, ".tmp")
}

// checkDataDir accepts a missing or empty directory, or one dev made.
func checkDataDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dev: -data: %w", err)
	}
	if len(ents) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, devMarker)); err != nil {
		return fmt.Errorf("dev: -data %s is not empty and smtpgate dev did not make it (no %s): use a new or empty directory", dir, devMarker)
	}
	return nil
}

// resetDataDir deletes what dev made in dir, and dir if it is then
// empty. It deletes nothing if dir was not made by dev or holds anything
// dev did not make.
func resetDataDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dev: -reset: %w", err)
	}
	if len(ents) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, devMarker)); err != nil {
		return fmt.Errorf("dev: -reset: %s does not look like a smtpgate dev directory (no %s); not deleting anything", dir, devMarker)
	}
	var foreign []string
	for _, e := range ents {
		if !isDevFile(e.Name()) {
			foreign = append(foreign, e.Name())
		}
	}
	if len(foreign) > 0 {
		return fmt.Errorf("dev: -reset: %s holds %s, which smtpgate dev did not make; not deleting anything (move them away first)", dir, strings.Join(foreign, ", "))
	}
	var errs []error
	for _, e := range ents {
		if e.Name() != devMarker {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dev: -reset: %w", err)
	}
	// The marker goes last, so an interrupted reset can be run again.
	if err := os.Remove(filepath.Join(dir, devMarker)); err != nil {
		return fmt.Errorf("dev: -reset: %w", err)
	}
	return os.Remove(dir)
}

// prepareDataDir creates what the config names: the certificate, the
// provider's signing key and the web client's secret. What exists is kept,
// so state survives restarts.
func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, devMarker), []byte("smtpgate dev state; smtpgate dev -reset wipes this directory\n"), 0o600); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if err := ensureCert(dir); err != nil {
		return err
	}
	if err := ensureFile(filepath.Join(dir, "web-client-secret"), func() ([]byte, error) { return []byte(rand.Text() + "\n"), nil }); err != nil {
		return err
	}
	if err := ensureFile(filepath.Join(dir, "hello.eml"), func() ([]byte, error) { return []byte(helloMessage), nil }); err != nil {
		return err
	}
	return ensureFile(filepath.Join(dir, "idp.key"), func() ([]byte, error) {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), err
	})
}

const helloMessage = "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\nSubject: Hello from smtpgate dev\r\n\r\nThis message went through smtpgate with an OAuth token.\r\n"

func ensureFile(path string, make func() ([]byte, error)) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	b, err := make()
	if err != nil {
		return fmt.Errorf("dev: %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	return nil
}

// ensureCert keeps a self-signed certificate for localhost and 127.0.0.1,
// renewing it when it has expired.
func ensureCert(dir string) error {
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if c, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && !c.Leaf.IsCA && time.Now().Before(c.Leaf.NotAfter.Add(-24*time.Hour)) {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"smtpgate dev"}},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		// A self-signed leaf, not a CA: trusting it (curl --cacert)
		// trusts this one certificate, not whatever a stolen key signs.
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("dev: certificate: %w", err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

type devIdP struct {
	p   *devprovider.Provider
	srv *http.Server
}

func (d *devIdP) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.srv.Shutdown(ctx)
}

func startDevIdP(dir string, a devAddrs, allowNonLoopback bool, log *slog.Logger) (*devIdP, error) {
	b, err := os.ReadFile(filepath.Join(dir, "idp.key"))
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("dev: %s/idp.key is not PEM; run with -reset", dir)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	key, ok := k.(*rsa.PrivateKey)
	if err != nil || !ok {
		return nil, fmt.Errorf("dev: %s/idp.key is not an RSA key; run with -reset", dir)
	}
	secret, err := os.ReadFile(filepath.Join(dir, "web-client-secret"))
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	p, err := devprovider.New(devprovider.Config{
		Issuer: "http://" + a.IdP,
		Users: []devprovider.User{{
			Username: devUser, Password: devPassword, Email: devMailbox, EmailVerified: true,
			Name: "Alice Example", Aliases: []string{devAlias},
		}},
		Clients: []devprovider.Client{
			{ID: "smtpgate-web", Secret: strings.TrimSpace(string(secret)), RedirectURIs: []string{"http://" + a.Web + "/auth/callback"},
				PostLogoutRedirectURIs: []string{"http://" + a.Web + "/"}},
			// Thunderbird and other native apps: any port on loopback
			// (RFC 8252 section 7.3).
			{ID: "thunderbird", RedirectURIs: []string{"http://localhost", "http://127.0.0.1"}, Scopes: []string{"openid", "email", "profile", "offline_access", "smtp.send"}},
		},
		SigningKey:       key,
		AllowInsecure:    true,
		ForceNonLoopback: allowNonLoopback,
		// Like a real provider: a login session that prompt=login and
		// max_age see through, and that signing out ends.
		SSO:    true,
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("dev: identity provider: %w", err)
	}
	l, err := p.Listen(a.IdP)
	if err != nil {
		return nil, fmt.Errorf("dev: -idp %s: %w (pass -idp ADDR to use another)", a.IdP, err)
	}
	srv := web.NewServer(p.Handler(), web.ServerLimits{}, log)
	go srv.Serve(l)
	log.Info("listening", "listener", "idp", "addr", l.Addr().String())
	return &devIdP{p, srv}, nil
}

func startOutbox(dir, addr string, log *slog.Logger) (*outbox.Server, error) {
	ob, err := outbox.New(filepath.Join(dir, "outbox"), "upstream.localhost", log)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dev: -upstream %s: %w (pass -upstream ADDR to use another)", addr, err)
	}
	go ob.Serve(l)
	log.Info("listening", "listener", "upstream", "addr", l.Addr().String())
	return ob, nil
}

// demoAppToken returns the demo person's app token, kept in the data
// directory (dev mode only: a real one is never stored in clear) and made
// anew when it is gone, revoked or expired.
func demoAppToken(ctx context.Context, cfg *Config, dir string, log *slog.Logger) (string, error) {
	st, _, err := openStore(ctx, cfg, log, storeServe)
	if err != nil {
		return "", err
	}
	defer st.Close()
	path := filepath.Join(dir, "demo-app-token")
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if id, _, err := store.ParseToken(cfg.Tokens.Prefix, tok); err == nil {
			if t, err := st.Get(ctx, id); err == nil && t.Live(time.Now()) {
				return tok, nil
			}
		}
	}
	tok, _, err := st.Create(ctx, store.NewToken{
		Owner: mailaddr.MustParse(devMailbox), Creator: "dev", Label: "smtpgate dev demo",
		Senders:   []mailaddr.Address{mailaddr.MustParse(devMailbox), mailaddr.MustParse(devAlias)},
		ExpiresAt: time.Now().Add(cfg.Tokens.DefaultTTL), CreatedFrom: "dev",
	})
	if err != nil {
		return "", fmt.Errorf("dev: demo app token: %w", err)
	}
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("dev: %w", err)
	}
	return tok, nil
}

func printDevHelp(w io.Writer, dir string, a devAddrs, access, appToken string) {
	q := shellQuote
	fmt.Fprintf(w, `
smtpgate dev is running; state is kept in %[1]s/ (Ctrl-C stops it, -reset starts afresh).

  Web app   http://%[2]s   sign in as %[3]s, password %[4]s
  Outbox    http://%[2]s/outbox   (what the built-in upstream received)
  SMTP      %[5]s (STARTTLS) and %[6]s (implicit TLS), certificate %[1]s/tls.crt
  OpenID    http://%[7]s/.well-known/openid-configuration
  Set up    http://%[2]s/setup   (per mail program; Thunderbird's add-on: http://%[2]s/setup/thunderbird/addon.xpi)
  Autoconfig  http://%[2]s/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=%[9]s

Send a message with an OAuth token (SASL OAUTHBEARER; the token is valid for an hour):

  curl --url smtp://%[5]s --ssl-reqd --cacert %[8]s --mail-from %[9]s --mail-rcpt bob@example.org --user %[9]s: --oauth2-bearer %[10]s --upload-file %[11]s

Send a message with an app token (AUTH PLAIN), as Apple Mail or a printer would:

  swaks --server %[5]s --tls --auth PLAIN --auth-user %[9]s --auth-password %[12]s --from %[9]s --to bob@example.org

The configuration is %[13]s; 'smtpgate dev -print-config' prints it.

`, dir, a.Web, devUser, devPassword, a.Submission, a.Submissions, a.IdP,
		q(filepath.Join(dir, "tls.crt")), devMailbox, access, q(filepath.Join(dir, "hello.eml")), appToken,
		q(filepath.Join(dir, "smtpgate.yaml")))
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
