// Command smtpload drives SMTP submission sessions against smtpgate (or
// any submission server) on this machine, for the README's numbers:
//
//	smtpload -addr 127.0.0.1:587 -starttls -ca cert.pem -token-file tokens.txt -c 64 -n 2000
//	smtpload -addr 127.0.0.1:587 -token-file tokens.txt -idle 10000 -hold 60s
//
// Each session is connect, EHLO, (STARTTLS, EHLO,) AUTH OAUTHBEARER, MAIL,
// RCPT, DATA with a -size byte message, QUIT. With one token in the file
// every session presents the same one (the server's token cache is warm);
// with as many tokens as sessions each session presents a fresh one.
// -idle opens that many sessions, authenticates them and holds them.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/smtpgate/smtpgate/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "smtpload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("smtpload", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:587", "server `host:port` (loopback only)")
	starttls := fs.Bool("starttls", false, "upgrade each connection with STARTTLS")
	caFile := fs.String("ca", "", "PEM `file` of the certificate to trust for STARTTLS")
	serverName := fs.String("server-name", "localhost", "name to check in the server's certificate")
	tokenFile := fs.String("token-file", "", "`file` of bearer tokens, one a line; none means no AUTH")
	from := fs.String("from", "alice@example.com", "envelope sender and From:")
	to := fs.String("to", "bob@example.org", "recipient")
	size := fs.Int("size", 1024, "message size in `bytes`")
	c := fs.Int("c", 1, "sessions at once")
	n := fs.Int("n", 100, "sessions in all")
	idle := fs.Int("idle", 0, "open this many authenticated sessions and hold them")
	hold := fs.Duration("hold", time.Minute, "how long -idle holds the sessions (at most 1h)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o := loadgen.Options{Addr: *addr, From: *from, To: *to, Concurrency: *c, Sessions: *n,
		Message: loadgen.Message(*from, *to, *size)}
	if *tokenFile != "" {
		toks, err := readTokens(*tokenFile)
		if err != nil {
			return err
		}
		o.Tokens = toks
	}
	if *starttls {
		cfg := &tls.Config{ServerName: *serverName}
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				return err
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%s holds no certificate", *caFile)
			}
		}
		o.TLS = cfg
	}
	if *idle > 0 {
		o.Concurrency = *idle
		clients, res, err := loadgen.OpenIdle(ctx, o)
		defer loadgen.CloseAll(clients)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "opened %d idle sessions (%d errors) in %v\n", res.Sessions, res.Errors, res.Elapsed.Round(time.Millisecond))
		if res.FirstErr != nil {
			fmt.Fprintf(stdout, "first error: %v\n", res.FirstErr)
		}
		t := time.NewTimer(min(*hold, time.Hour))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		return nil
	}
	res, err := loadgen.Run(ctx, o)
	fmt.Fprintln(stdout, res)
	if res.FirstErr != nil {
		fmt.Fprintf(stdout, "first error: %v\n", res.FirstErr)
	}
	if err == nil && res.Errors > 0 {
		err = errors.New("some sessions failed")
	}
	return err
}

func readTokens(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var toks []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			toks = append(toks, t)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("%s holds no token", path)
	}
	return toks, nil
}
