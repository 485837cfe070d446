package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	coreoidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/smtpgate/smtpgate/clientsetup"
	"github.com/smtpgate/smtpgate/oidc"
	"github.com/smtpgate/smtpgate/web"
)

// provisionSetup checks the autoconfig: and thunderbird: sections.
func (c *Config) provisionSetup() error {
	// The domains matter without the web app too: the add-on lists them
	// as hostnames, and autoconfig may be served from elsewhere.
	return errors.Join(c.Autoconfig.Validate(), c.Thunderbird.Validate())
}

// setupServer is the SMTP side as the generated files describe it.
func (c *Config) setupServer() clientsetup.Server {
	return clientsetup.Server{Host: c.SMTP.Hostname, SubmissionPort: port(*c.SMTP.Submission), SubmissionsPort: port(*c.SMTP.Submissions)}
}

// setupWebConfig adds the setup pages' part of the web app's config.
func setupWebConfig(wc *web.Config, cfg *Config, v *oidc.Verifier) {
	wc.Autoconfig = cfg.Autoconfig
	wc.Thunderbird = cfg.Thunderbird
	if is := cfg.webIssuer(); is != nil {
		wc.Audiences = is.Audiences
	}
	wc.Verifier = v
}

// addonIssuer is the provider Thunderbird signs in at: the web app's.
func (c *Config) addonIssuer() string {
	if is := c.webIssuer(); is != nil {
		return is.Issuer
	}
	return c.OIDC.Issuers[0].Issuer
}

// thunderbirdAddonCmd writes the Thunderbird add-on the web app serves at
// /setup/thunderbird/addon.xpi, for distributing it some other way.
func thunderbirdAddonCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("thunderbird-addon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	out := fs.String("o", "", "write the .xpi to `file` (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("thunderbird-addon: unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return errors.New("thunderbird-addon: -o FILE is required")
	}
	cfg, err := configFrom(*path)
	if err != nil {
		return err
	}
	if cfg.Thunderbird.ClientID == "" {
		return errors.New("thunderbird-addon: thunderbird.client_id is not set in the config")
	}
	issuer := cfg.addonIssuer()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p, err := coreoidc.NewProvider(coreoidc.ClientContext(dctx, &http.Client{Timeout: 30 * time.Second}), issuer)
	if err != nil {
		return fmt.Errorf("thunderbird-addon: discover %s: %w", issuer, err)
	}
	ad, err := clientsetup.NewAddon(cfg.setupServer(), cfg.Autoconfig, cfg.Thunderbird,
		clientsetup.Endpoints{Issuer: issuer, Authorization: p.Endpoint().AuthURL, Token: p.Endpoint().TokenURL})
	if err != nil {
		return fmt.Errorf("thunderbird-addon: %w", err)
	}
	b, err := ad.XPI()
	if err != nil {
		return fmt.Errorf("thunderbird-addon: %w", err)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return fmt.Errorf("thunderbird-addon: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s: add-on %s for %s (profile folder: extensions/%s.xpi)\n", *out, ad.ID, issuer, ad.ID)
	return nil
}

// errRefused is check-token's verdict when the token would be refused:
// the report says why, so run prints nothing more than this.
var errRefused = errors.New("check-token: the token would be refused")

// checkTokenCmd runs the gateway's token checks on one token and prints
// each; the exit status is 0 only when the token would be accepted.
func checkTokenCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check-token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: smtpgate check-token -config FILE TOKEN   (TOKEN - reads it from stdin)")
		fs.PrintDefaults()
	}
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("check-token: give one token, or - to read it from stdin")
	}
	tok := fs.Arg(0)
	if tok == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
		if err != nil {
			return fmt.Errorf("check-token: read stdin: %w", err)
		}
		tok = string(b)
	}
	tok = strings.TrimSpace(tok)
	if len(tok) > 7 && strings.EqualFold(tok[:7], "bearer ") {
		tok = strings.TrimSpace(tok[7:])
	}
	cfg, err := configFrom(*path)
	if err != nil {
		return err
	}
	lc := cfg.Log
	lc.level = max(lc.level, slog.LevelWarn)
	v, err := oidc.New(cfg.oidcConfig(newLogger(stderr, lc)))
	if err != nil {
		return fmt.Errorf("check-token: %w", err)
	}
	rep := v.Explain(ctx, tok)
	fmt.Fprint(stdout, rep.String())
	if !rep.Accepted() {
		return errRefused
	}
	return nil
}
