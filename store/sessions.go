package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/smtpgate/smtpgate/mailaddr"
)

// ErrNoSession is returned for a web session that does not exist, ended,
// or expired, and for a consent nonce that is unknown, used or expired.
var ErrNoSession = errors.New("store: no such session")

// A Session is a web app sign-in, kept server-side so that signing out
// (or "sign out everywhere") makes a copied cookie worthless. The store
// keeps only a hash of ID.
type Session struct {
	ID        string           // the secret in the cookie; set by CreateSession
	Subject   string           // "iss#sub" of the person
	Mailbox   mailaddr.Address // their mailbox, for the admin's "sign out" of a person
	Data      []byte           // what the web app keeps about the sign-in (JSON)
	CreatedAt time.Time
	ExpiresAt time.Time
}

func idHash(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// CreateSession stores a new session with a fresh random ID and returns
// it. Expired sessions and nonces are swept in the same transaction.
func (s *Store) CreateSession(ctx context.Context, sess Session) (Session, error) {
	if strings.TrimSpace(sess.Subject) == "" || sess.Mailbox.IsZero() {
		return Session{}, fmt.Errorf("%w: session without subject or mailbox", ErrValidation)
	}
	now := fromMicro(s.now().UnixMicro())
	if !sess.ExpiresAt.After(now) {
		return Session{}, fmt.Errorf("%w: session expires in the past", ErrValidation)
	}
	sess.ID = rand.Text()
	sess.CreatedAt = now
	sess.ExpiresAt = fromMicro(toMicro(sess.ExpiresAt))
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return Session{}, fmt.Errorf("create session: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM web_sessions WHERE expires_at <= ?`), toMicro(now)); err != nil {
		return Session{}, fmt.Errorf("create session: sweep: %w", err)
	}
	if _, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM consent_nonces WHERE expires_at <= ?`), toMicro(now)); err != nil {
		return Session{}, fmt.Errorf("create session: sweep nonces: %w", err)
	}
	if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO web_sessions
		(id_hash, subject, mailbox, data, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`),
		idHash(sess.ID), sess.Subject, sess.Mailbox.String(), string(sess.Data), toMicro(now), toMicro(sess.ExpiresAt)); err != nil {
		return Session{}, fmt.Errorf("create session: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Session{}, fmt.Errorf("create session: %w", err)
	}
	return sess, nil
}

// Session returns the live session with the ID, or ErrNoSession.
func (s *Store) Session(ctx context.Context, id string) (Session, error) {
	if id == "" {
		return Session{}, ErrNoSession
	}
	var (
		sess             Session
		mailbox, data    string
		created, expires int64
	)
	err := s.rdb.QueryRowContext(ctx, s.d.rebind(`SELECT subject, mailbox, data, created_at, expires_at
		FROM web_sessions WHERE id_hash = ?`), idHash(id)).Scan(&sess.Subject, &mailbox, &data, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, ErrNoSession
	}
	if err != nil {
		return Session{}, fmt.Errorf("read session: %w", err)
	}
	if !s.now().Before(fromMicro(expires)) {
		return Session{}, ErrNoSession
	}
	sess.ID, sess.Data = id, []byte(data)
	sess.CreatedAt, sess.ExpiresAt = fromMicro(created), fromMicro(expires)
	if sess.Mailbox, err = mailaddr.Parse(mailbox); err != nil {
		return Session{}, fmt.Errorf("read session: %w", err)
	}
	return sess, nil
}

// DeleteSession ends one session and its consent nonces. Ending a
// session that does not exist is not an error.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	defer tx.Rollback()
	h := idHash(id)
	if _, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM web_sessions WHERE id_hash = ?`), h); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	if _, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM consent_nonces WHERE session_hash = ?`), h); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// DeleteSessionsOf ends every session of the subject ("sign out
// everywhere") and returns how many there were.
func (s *Store) DeleteSessionsOf(ctx context.Context, subject string) (int, error) {
	if strings.TrimSpace(subject) == "" {
		return 0, fmt.Errorf("%w: empty subject", ErrValidation)
	}
	return s.deleteSessionsWhere(ctx, `subject = ?`, subject)
}

// DeleteSessionsOfMailbox ends every session of the person with the
// mailbox, whatever provider account signed in: what an admin does when
// the person leaves.
func (s *Store) DeleteSessionsOfMailbox(ctx context.Context, mailbox mailaddr.Address) (int, error) {
	if mailbox.IsZero() {
		return 0, fmt.Errorf("%w: empty mailbox", ErrValidation)
	}
	return s.deleteSessionsWhere(ctx, `mailbox = ?`, mailbox.String())
}

func (s *Store) deleteSessionsWhere(ctx context.Context, cond, arg string) (int, error) {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("delete sessions: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM consent_nonces WHERE session_hash IN
		(SELECT id_hash FROM web_sessions WHERE `+cond+`)`), arg); err != nil {
		return 0, fmt.Errorf("delete sessions: %w", err)
	}
	res, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM web_sessions WHERE `+cond), arg)
	if err != nil {
		return 0, fmt.Errorf("delete sessions: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete sessions: %w", err)
	}
	return int(n), tx.Commit()
}

// IssueNonce returns a new one-time nonce bound to the session, valid for
// ttl: the consent page carries it, and UseNonce accepts it once.
func (s *Store) IssueNonce(ctx context.Context, sessionID string, ttl time.Duration) (string, error) {
	nonce := rand.Text()
	now := s.now()
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("issue nonce: %w", err)
	}
	defer tx.Rollback()
	// Expired nonces go first, so reloading consent pages cannot grow
	// the table beyond what ttl allows.
	if _, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM consent_nonces WHERE expires_at <= ?`), toMicro(now)); err != nil {
		return "", fmt.Errorf("issue nonce: sweep: %w", err)
	}
	if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO consent_nonces (nonce_hash, session_hash, expires_at) VALUES (?, ?, ?)`),
		idHash(nonce), idHash(sessionID), now.Add(ttl).UnixMicro()); err != nil {
		return "", fmt.Errorf("issue nonce: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("issue nonce: %w", err)
	}
	return nonce, nil
}

// UseNonce spends a nonce of the session. Of two uses, even concurrent
// ones, only the first succeeds; the others, and unknown, expired or
// another session's nonces, get ErrNoSession.
func (s *Store) UseNonce(ctx context.Context, sessionID, nonce string) error {
	if nonce == "" {
		return ErrNoSession
	}
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("use nonce: %w", err)
	}
	defer tx.Rollback()
	var sessHash string
	var expires int64
	err = tx.QueryRowContext(ctx, s.d.rebind(`SELECT session_hash, expires_at FROM consent_nonces WHERE nonce_hash = ?`),
		idHash(nonce)).Scan(&sessHash, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNoSession
	}
	if err != nil {
		return fmt.Errorf("use nonce: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(sessHash), []byte(idHash(sessionID))) != 1 || !s.now().Before(fromMicro(expires)) {
		return ErrNoSession
	}
	res, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM consent_nonces WHERE nonce_hash = ?`), idHash(nonce))
	if err != nil {
		return fmt.Errorf("use nonce: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return ErrNoSession
	}
	return tx.Commit()
}
