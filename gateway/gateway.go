// Package gateway is smtpgate's SMTP submission server: it authenticates
// mail clients with OAuth 2.0 bearer tokens, enforces who may send as whom,
// and relays each message to the upstream MTA, answering 250 only once the
// upstream accepted it.
//
// It implements message submission (RFC 6409) on port 587 with STARTTLS
// (RFC 3207) and on port 465 with implicit TLS (RFC 8314), SMTP AUTH
// (RFC 4954) with the OAUTHBEARER (RFC 7628) and XOAUTH2 SASL mechanisms,
// and the "ESMTPSA" Received clause of RFC 3848. The SASL mechanisms are
// written here rather than taken from go-sasl, whose OAUTHBEARER server
// rejects unknown keys and panics on an empty client reply, and which has
// no XOAUTH2 server.
//
// The package knows nothing of YAML, HTTP or SQL: credentials are checked
// through the TokenVerifier and PasswordChecker seams.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// An Identity is who a credential authenticates, and the addresses it may
// send as. The verifiers fill it; the sender policy reads it.
type Identity struct {
	Subject   string   // "iss#sub" for OAuth, "apptoken:<id>" for app tokens
	Addresses []string // the mailbox first, then aliases
	// Expires is when the credential stops being valid (a token's exp,
	// an app token's expiry); zero means it does not expire. Each MAIL
	// checks it: a session outliving its credential must authenticate
	// again.
	Expires time.Time
	// AppTokenID is the app token's id, for CredentialChecker; "" for
	// bearer tokens.
	AppTokenID string
}

// A CredentialChecker says whether a credential that authenticated a
// session is still good: an app token not revoked since, an account not
// suspended. It runs at each MAIL; a refusal should be an *AuthError.
type CredentialChecker interface {
	CheckCredential(ctx context.Context, id Identity) error
}

// A TokenVerifier checks an OAuth 2.0 bearer token. A failure should be an
// *AuthError; any other error is treated as a temporary failure of the
// identity provider.
type TokenVerifier interface {
	VerifyToken(ctx context.Context, token string) (Identity, error)
}

// A PasswordChecker checks an app token given as an AUTH PLAIN or LOGIN
// password; remote is the client's IP address, recorded as where the token
// was last used. A failure should be an *AuthError.
type PasswordChecker interface {
	CheckPassword(ctx context.Context, username, password, remote string) (Identity, error)
}

// An AuthError is a credential that was checked and refused, in the terms
// RFC 7628 and RFC 6750 use, so the SMTP layer can answer the client.
type AuthError struct {
	// Status is the RFC 7628 status: "invalid_token", "insufficient_scope"
	// or "invalid_request". Empty means "invalid_token".
	Status string
	// Scope lists the scopes the token lacks, for insufficient_scope.
	Scope string
	// DiscoveryURL is the issuer's OpenID discovery document, sent to
	// OAUTHBEARER clients as "openid-configuration".
	DiscoveryURL string
	// Temporary is set when the credential could not be checked at all
	// (the identity provider is unreachable and no keys are cached): the
	// client gets 454 and tries again later instead of 535.
	Temporary bool
	// Reason says why, for the log. It never contains the credential.
	Reason string
}

func (e *AuthError) Error() string {
	if e.Temporary {
		return "credential check unavailable: " + e.Reason
	}
	return "credential refused: " + e.Reason
}

// UpstreamTLS says how the relay secures its connection to the upstream MTA.
type UpstreamTLS string

const (
	UpstreamTLSNone     UpstreamTLS = "none"
	UpstreamTLSStartTLS UpstreamTLS = "starttls"
	UpstreamTLSImplicit UpstreamTLS = "tls"
)

// UpstreamConfig configures the connection to the upstream MTA.
type UpstreamConfig struct {
	// Addr is the upstream's host:port. Required.
	Addr string
	// TLS is none, starttls or tls. Empty means starttls.
	TLS UpstreamTLS
	// TLSConfig is used for starttls and tls. If nil, the system roots and
	// the host of Addr as server name are used.
	TLSConfig *tls.Config
	// Username and Password, if Username is set, authenticate to the
	// upstream with AUTH PLAIN.
	Username string
	Password string
	// DialTimeout bounds connecting and the greeting, and the wait for a
	// free connection when MaxConns are busy. Zero means 30s.
	DialTimeout time.Duration
	// CommandTimeout bounds each upstream reply, including the one after
	// the final dot. Zero means 5 minutes (RFC 5321 section 4.5.3.2).
	CommandTimeout time.Duration
	// MaxIdle is how many idle connections are kept for reuse. Zero means
	// MaxConns, so a burst does not end in a round of closes and redials
	// (IdleTimeout shrinks the pool again); negative disables pooling.
	MaxIdle int
	// IdleTimeout is how long an idle connection is kept. Zero means 30s,
	// well below the 300s most MTAs wait for a command.
	IdleTimeout time.Duration
	// MaxConns bounds the connections open to the upstream at once; a
	// transaction beyond it waits up to DialTimeout, then gets 451. Zero
	// means 100.
	MaxConns int
}

// Config configures a Server. Zero values have the defaults documented on
// each field.
type Config struct {
	// Hostname is announced in the greeting and the Received header.
	// Required.
	Hostname string
	// TLSConfig serves STARTTLS and implicit TLS. Required unless
	// AllowInsecureAuth is set. MinVersion is raised to TLS 1.2.
	TLSConfig *tls.Config
	// AllowInsecureAuth offers AUTH without TLS: for loopback and tests
	// only.
	AllowInsecureAuth bool
	// MaxMessageBytes is advertised as SIZE and enforced. Zero means 25 MiB.
	MaxMessageBytes int64
	// MaxRecipients per message. Zero means 100.
	MaxRecipients int
	// MaxLineLength bounds AUTH command lines and SASL responses, which
	// carry a whole token (RFC 4954 section 4 asks for 12288 octets; Entra
	// tokens need more). Other commands get 512 octets (MAIL and RCPT
	// 2048, for their parameters). Zero means 64 KiB; less than 32 KiB is
	// raised to 32 KiB.
	MaxLineLength int
	// MaxHeaderBytes bounds the message header, which is held in memory for
	// the From: and Sender: checks. Zero means 1 MiB.
	MaxHeaderBytes int
	// ReadTimeout is how long a client may take to send a command. Zero
	// means 5 minutes: Thunderbird sends EHLO, runs its browser sign-in,
	// and sends AUTH on the same connection afterwards.
	ReadTimeout time.Duration
	// WriteTimeout bounds each reply. Zero means 1 minute.
	WriteTimeout time.Duration
	// MaxAuthFailures is how many failed AUTH commands a connection may
	// have; the next AUTH is answered 421 and the connection closed. Zero
	// means 3, which leaves room for Thunderbird's Retry.
	MaxAuthFailures int
	// AuthTimeout bounds one credential check. Zero means 30s.
	AuthTimeout time.Duration
	// AuthFailureDelay slows down an address that keeps failing AUTH:
	// after 3 failures within 10 minutes, each further failure reply
	// waits this much longer than the last, up to 15s. Zero means 1s;
	// negative disables it.
	AuthFailureDelay time.Duration
	// Tokens checks OAUTHBEARER and XOAUTH2 bearer tokens. Required.
	Tokens TokenVerifier
	// Passwords checks app tokens given to PLAIN and LOGIN. If nil, those
	// mechanisms are not offered.
	Passwords PasswordChecker
	// Credentials, if set, re-checks the session's credential at each
	// MAIL, so a revoked app token stops a session that is still open.
	Credentials CredentialChecker

	// Limits that hold under abuse. Each refusal is "421 4.7.0" naming
	// the limit, and a log line.

	// MaxConns bounds the client connections open at once. Zero means
	// 10000.
	MaxConns int
	// MaxConnsPerClient bounds the connections from one client address
	// (for IPv6, one /64). Zero means 1000, room for a company behind
	// one NAT address.
	MaxConnsPerClient int
	// MaxUnauthCommands bounds the commands a connection may send before
	// it authenticates. Zero means 30; a mail client needs about 5.
	MaxUnauthCommands int
	// MaxTransactionsPerIdentity bounds the mail transactions one
	// identity (one person's token, one app token) may have under way at
	// once, so one stolen credential cannot hold every upstream
	// connection. Zero means 10.
	MaxTransactionsPerIdentity int
	// TransactionTimeout bounds a transaction from MAIL to the end of
	// DATA. Zero means 30 minutes: a 25 MiB message at 200 kbit/s.
	TransactionTimeout time.Duration
	// PreAuthTimeout bounds the time from connect to a successful AUTH.
	// Zero means 10 minutes: Thunderbird says EHLO, then waits while the
	// person signs in (MFA included) before it sends AUTH.
	PreAuthTimeout time.Duration
	// MaxSessionDuration bounds a connection's life. Zero means 1 hour.
	MaxSessionDuration time.Duration
	// Upstream is the MTA messages are relayed to.
	Upstream UpstreamConfig
	// Logger receives the audit and error log. If nil, nothing is logged.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 25 << 20
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = 100
	}
	if c.MaxLineLength == 0 {
		c.MaxLineLength = 64 << 10
	}
	if c.MaxLineLength < 32<<10 {
		c.MaxLineLength = 32 << 10
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 1 << 20
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 5 * time.Minute
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = time.Minute
	}
	if c.MaxAuthFailures == 0 {
		c.MaxAuthFailures = 3
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = 30 * time.Second
	}
	if c.AuthFailureDelay == 0 {
		c.AuthFailureDelay = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxConns == 0 {
		c.MaxConns = 10000
	}
	if c.MaxConnsPerClient == 0 {
		c.MaxConnsPerClient = 1000
	}
	if c.MaxUnauthCommands == 0 {
		c.MaxUnauthCommands = 30
	}
	if c.MaxTransactionsPerIdentity == 0 {
		c.MaxTransactionsPerIdentity = 10
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = 30 * time.Minute
	}
	if c.PreAuthTimeout == 0 {
		c.PreAuthTimeout = 10 * time.Minute
	}
	if c.MaxSessionDuration == 0 {
		c.MaxSessionDuration = time.Hour
	}
	u := &c.Upstream
	if u.TLS == "" {
		u.TLS = UpstreamTLSStartTLS
	}
	if u.DialTimeout == 0 {
		u.DialTimeout = 30 * time.Second
	}
	if u.CommandTimeout == 0 {
		u.CommandTimeout = 5 * time.Minute
	}
	if u.MaxConns == 0 {
		u.MaxConns = 100
	}
	if u.MaxIdle == 0 {
		u.MaxIdle = u.MaxConns
	}
	if u.IdleTimeout == 0 {
		u.IdleTimeout = 30 * time.Second
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Hostname == "" {
		errs = append(errs, errors.New("hostname is required"))
	}
	if c.Tokens == nil {
		errs = append(errs, errors.New("a token verifier is required"))
	}
	if c.TLSConfig == nil && !c.AllowInsecureAuth {
		errs = append(errs, errors.New("a TLS certificate is required unless allow_insecure_auth is set"))
	}
	if c.Upstream.Addr == "" {
		errs = append(errs, errors.New("upstream address is required"))
	}
	switch c.Upstream.TLS {
	case UpstreamTLSNone, UpstreamTLSStartTLS, UpstreamTLSImplicit:
	default:
		errs = append(errs, fmt.Errorf("upstream tls %q: want none, starttls or tls", c.Upstream.TLS))
	}
	if c.MaxMessageBytes < 0 || c.MaxRecipients < 0 || c.MaxAuthFailures < 0 || c.MaxConns < 0 ||
		c.MaxConnsPerClient < 0 || c.MaxUnauthCommands < 0 || c.MaxTransactionsPerIdentity < 0 {
		errs = append(errs, errors.New("limits must not be negative"))
	}
	if c.TransactionTimeout < 0 || c.PreAuthTimeout < 0 || c.MaxSessionDuration < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	return errors.Join(errs...)
}
