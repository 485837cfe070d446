package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/smtpgate/smtpgate/mailaddr"
	"github.com/smtpgate/smtpgate/store"
)

const tokenUsage = `usage:
  smtpgate token create -user ADDR -label LABEL [-expires 90d] [-sender ADDR]...
  smtpgate token list [-user ADDR]
  smtpgate token revoke ID
  smtpgate token revoke -user ADDR -all
every form also takes -config FILE (default $SMTPGATE_CONFIG)
`

// tokenCmd administers app tokens in the same store the server uses; it
// may run while the server does.
func tokenCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return errors.New("token: no subcommand given")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("token "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := configFlag(fs)
	user := fs.String("user", "", "the owner's `address`")
	var (
		label   *string
		expires *string
		senders stringList
		all     *bool
	)
	switch sub {
	case "create":
		label = fs.String("label", "", "what the token is for, e.g. \"iPhone Mail\"")
		expires = fs.String("expires", "", "lifetime, e.g. 90d or 720h (default tokens.default_ttl)")
		fs.Var(&senders, "sender", "an `address` the token may send as (repeatable; default the owner)")
	case "list":
	case "revoke":
		all = fs.Bool("all", false, "revoke every token of -user")
	default:
		fmt.Fprint(stderr, tokenUsage)
		return fmt.Errorf("token: unknown subcommand %q", sub)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := configFrom(*configPath)
	if err != nil {
		return err
	}
	if !cfg.appTokens() {
		return errors.New("token: the config has no store (store.dsn)")
	}
	// The CLI never creates a database or a key: a wrong -config or a
	// wrong directory is an error, not a fresh empty store. list opens the
	// database read-only, so it works where the admin may only read.
	mode := storeAdmin
	if sub == "list" {
		mode = storeList
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	st, _, err := openStore(ctx, cfg, log, mode)
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(stderr, "store: %s\n", st.Describe())
	admin := "cli:" + osUser()
	var owner mailaddr.Address
	if *user != "" {
		if owner, err = mailaddr.Parse(*user); err != nil {
			return fmt.Errorf("token %s: -user: %w", sub, err)
		}
	}

	switch sub {
	case "create":
		if fs.NArg() > 0 || owner.IsZero() || *label == "" {
			return errors.New("token create: -user and -label are required")
		}
		sendAs, err := mailaddr.ParseList(senders)
		if err != nil {
			return fmt.Errorf("token create: -sender: %w", err)
		}
		ttl := cfg.Tokens.DefaultTTL
		if *expires != "" {
			if ttl, err = parseLifetime(*expires); err != nil {
				return fmt.Errorf("token create: -expires: %w", err)
			}
		}
		if ttl > cfg.Tokens.MaxTTL {
			return fmt.Errorf("token create: -expires %v exceeds tokens.max_ttl %v", ttl, cfg.Tokens.MaxTTL)
		}
		secret, t, err := st.Create(ctx, store.NewToken{
			Owner: owner, Creator: admin, Label: *label, Senders: sendAs, ExpiresAt: time.Now().Add(ttl), CreatedFrom: "cli",
		})
		if err != nil {
			return fmt.Errorf("token create: %w", err)
		}
		log.Info("audit: token created", "by", admin, "via", "cli", "id", t.ID, "owner", t.Owner, "label", t.Label, "senders", t.Senders, "expires", t.ExpiresAt)
		fmt.Fprintf(stderr, "created token %s for %s, may send as %s, expires %s; it is shown only now:\n",
			t.ID, t.Owner, strings.Join(t.Senders, ", "), t.ExpiresAt.UTC().Format(time.RFC3339))
		fmt.Fprintln(stdout, secret)
	case "list":
		if fs.NArg() > 0 {
			return fmt.Errorf("token list: unexpected argument %q", fs.Arg(0))
		}
		var list []store.Token
		if owner.IsZero() {
			list, err = st.ListAll(ctx)
		} else {
			list, err = st.ListOwned(ctx, owner)
		}
		if err != nil {
			return fmt.Errorf("token list: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tOWNER\tLABEL\tSENDERS\tCREATED\tEXPIRES\tLAST USED\tUSES\tSTATUS")
		now := time.Now()
		for _, t := range list {
			status := "active"
			switch {
			case !t.RevokedAt.IsZero():
				status = "revoked"
			case !t.Live(now):
				status = "expired"
			}
			last := "never"
			if !t.LastUsedAt.IsZero() {
				last = t.LastUsedAt.UTC().Format(time.RFC3339) + " from " + t.LastUsedFrom
			}
			fmt.Fprintf(tw, "%s\t%s\t%q\t%s\t%s\t%s\t%s\t%d\t%s\n", t.ID, t.Owner, t.Label, strings.Join(t.Senders, ","),
				t.CreatedAt.UTC().Format(time.RFC3339), t.ExpiresAt.UTC().Format(time.RFC3339), last, t.UseCount, status)
		}
		return tw.Flush()
	case "revoke":
		switch {
		case *all && !owner.IsZero() && fs.NArg() == 0:
			n, err := st.RevokeAllOwned(ctx, owner, admin, true)
			if err != nil {
				return fmt.Errorf("token revoke: %w", err)
			}
			// A person who leaves is signed out of the web app too.
			ended, err := st.DeleteSessionsOfMailbox(ctx, owner)
			if err != nil {
				return fmt.Errorf("token revoke: end web sessions: %w", err)
			}
			log.Info("audit: all tokens revoked", "by", admin, "via", "cli", "owner", owner.String(), "count", n, "web_sessions_ended", ended)
			if n == 0 {
				return fmt.Errorf("token revoke: %s has no live tokens in %s (nothing revoked; check -user and -config)", owner, st.Describe())
			}
			fmt.Fprintf(stdout, "revoked %d live token(s) of %s\n", n, owner)
		case !*all && fs.NArg() == 1:
			// Always an administrator's act; with -user, only if the
			// token is that person's.
			t, err := st.Get(ctx, fs.Arg(0))
			if err == nil && !owner.IsZero() && t.Owner != owner.String() {
				err = fmt.Errorf("%w: %s is not a token of %s", store.ErrNotFound, fs.Arg(0), owner)
			}
			if err == nil {
				err = st.RevokeAsAdmin(ctx, fs.Arg(0), admin)
			}
			if err != nil {
				return fmt.Errorf("token revoke: %w", err)
			}
			log.Info("audit: token revoked", "by", admin, "via", "cli", "id", t.ID, "owner", t.Owner)
			fmt.Fprintf(stdout, "revoked %s\n", fs.Arg(0))
		default:
			return errors.New("token revoke: give one token ID, or -user ADDR -all")
		}
	}
	return nil
}

// osUser names who runs the CLI, for the audit log and revoked_by.
func osUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

// parseLifetime reads a duration that may also be given in days ("90d").
func parseLifetime(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("%q: want a positive number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q: want e.g. 90d or 720h", s)
	}
	return d, nil
}

// A stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }
