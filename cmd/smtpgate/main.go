// Command smtpgate is an OAuth 2.0 SMTP submission gateway: mail clients
// authenticate with a bearer token from the company's OpenID provider, and
// smtpgate relays their mail to the upstream MTA.
//
// Usage:
//
//	smtpgate serve -config smtpgate.yaml
//	smtpgate check-config -config smtpgate.yaml
//	smtpgate version
//
// Every subcommand that needs the config takes -config FILE, or reads the
// file named by SMTPGATE_CONFIG.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) && !errors.Is(err, errRefused) {
			fmt.Fprintln(os.Stderr, "smtpgate:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage: smtpgate <command> [flags]

commands:
  dev                        run everything on loopback, no IdP or MTA needed
  serve -config FILE         run the gateway
  check-config -config FILE  load and validate the config, list every problem
  token create|list|revoke   administer app tokens (see smtpgate token)
  check-token -config FILE TOKEN
                             say which of the gateway's checks a token passes
                             (TOKEN - reads stdin); exit 0 only if accepted
  thunderbird-addon -config FILE -o FILE
                             write the Thunderbird add-on (.xpi)
  version                    print the version

-config defaults to $SMTPGATE_CONFIG.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch cmd, args := args[0], args[1:]; cmd {
	case "serve":
		cfg, err := loadConfigFlags("serve", args, stderr)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, stderr, nil)
	case "check-config":
		cfg, err := loadConfigFlags("check-config", args, stderr)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: OK\n", cfg.path)
		return nil
	case "dev":
		return devCmd(ctx, args, stdout, stderr)
	case "token":
		return tokenCmd(ctx, args, stdout, stderr)
	case "check-token":
		return checkTokenCmd(ctx, args, os.Stdin, stdout, stderr)
	case "thunderbird-addon":
		return thunderbirdAddonCmd(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "smtpgate", version())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// loadConfigFlags parses a subcommand's flags and loads its config.
func loadConfigFlags(name string, args []string, stderr io.Writer) (*Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	return configFrom(*path)
}

func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", os.Getenv("SMTPGATE_CONFIG"), "config `file` (default $SMTPGATE_CONFIG)")
}

func configFrom(path string) (*Config, error) {
	if path == "" {
		return nil, errors.New("no config file: pass -config FILE or set SMTPGATE_CONFIG")
	}
	return loadConfig(path)
}

// version is the module version and VCS revision the binary was built
// from.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v += " " + s.Value
		case "vcs.modified":
			if s.Value == "true" {
				v += "+dirty"
			}
		}
	}
	return v
}
