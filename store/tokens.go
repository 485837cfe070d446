package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/smtpgate/smtpgate/mailaddr"
)

// Errors returned by the Store. Check's errors wrap ErrInvalid, ErrRevoked
// or ErrExpired and add the reason and token id for the log; they never
// contain the secret.
var (
	ErrNotFound   = errors.New("store: token not found")
	ErrInvalid    = errors.New("store: invalid app token")
	ErrRevoked    = errors.New("store: app token revoked")
	ErrExpired    = errors.New("store: app token expired")
	ErrTooMany    = errors.New("store: too many live app tokens")
	ErrValidation = errors.New("store: invalid new token")
)

// Limits on what Create accepts.
const (
	maxLabelRunes = 100
	maxSenders    = 100
	maxTextLen    = 255 // created_from
)

// A Token is an app token as stored: everything but its secret.
type Token struct {
	ID           string
	Owner        string   // the owner's mailbox, lower-case
	Creator      string   // who created it: "iss#sub" (web) or "cli…"
	Label        string   // as given, trimmed; not HTML-escaped
	Senders      []string // addresses this token may send as, lower-case
	CreatedAt    time.Time
	CreatedFrom  string // IP address, or "cli"
	ExpiresAt    time.Time
	LastUsedAt   time.Time // zero if never used
	LastUsedFrom string
	UseCount     int64
	RevokedAt    time.Time // zero if not revoked
	RevokedBy    string    // "owner:iss#sub" or "admin:…"; "" if not revoked
}

// Live reports whether t is neither revoked nor expired at now.
func (t Token) Live(now time.Time) bool {
	return t.RevokedAt.IsZero() && now.Before(t.ExpiresAt)
}

// withUse adds the unflushed use u to t.
func (t Token) withUse(u use) Token {
	t.UseCount += u.count
	if u.count > 0 && u.at.After(t.LastUsedAt) {
		t.LastUsedAt, t.LastUsedFrom = u.at, u.from
	}
	return t
}

// A NewToken is what Create needs.
type NewToken struct {
	Owner       mailaddr.Address   // the owner's mailbox; required
	Creator     string             // who creates it: "iss#sub" (web) or "cli:<os user>"; required
	Label       string             // 1 to 100 characters, no control or format characters
	CreatedFrom string             // IP address, or "cli"
	Senders     []mailaddr.Address // if empty, [Owner]; the caller checks they are Owner's
	ExpiresAt   time.Time          // required, in the future
}

const tokenColumns = `id, owner, label, senders, secret_hash, created_at, created_from,
	expires_at, last_used_at, last_used_from, use_count, revoked_at, creator, revoked_by`

// scanToken reads the tokenColumns of one row.
func scanToken(row interface{ Scan(...any) error }) (t Token, secretHash string, err error) {
	var senders string
	var created, expires, lastUsed, revoked int64
	err = row.Scan(&t.ID, &t.Owner, &t.Label, &senders, &secretHash, &created, &t.CreatedFrom,
		&expires, &lastUsed, &t.LastUsedFrom, &t.UseCount, &revoked, &t.Creator, &t.RevokedBy)
	if err != nil {
		return Token{}, "", err
	}
	if err := json.Unmarshal([]byte(senders), &t.Senders); err != nil {
		return Token{}, "", fmt.Errorf("token %s: decode senders: %w", t.ID, err)
	}
	t.CreatedAt = fromMicro(created)
	t.ExpiresAt = fromMicro(expires)
	t.LastUsedAt = fromMicro(lastUsed)
	t.RevokedAt = fromMicro(revoked)
	return t, secretHash, nil
}

// Timestamps are stored as unix microseconds, with 0 for the zero time.
func toMicro(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicro(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// hash is the stored form of a secret.
func (s *Store) hash(secret string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(secret))
	return m.Sum(nil)
}

// Create stores a new token and returns it with its plaintext, which is
// shown to the person once and cannot be recovered later. It fails with an
// error wrapping ErrValidation if n is not acceptable, and with ErrTooMany
// if the owner already has MaxLivePerUser live tokens.
func (s *Store) Create(ctx context.Context, n NewToken) (plaintext string, t Token, err error) {
	now := fromMicro(s.now().UnixMicro())
	t, err = newToken(n, now)
	if err != nil {
		return "", Token{}, err
	}
	senders, err := json.Marshal(t.Senders)
	if err != nil {
		return "", Token{}, err
	}
	secret := randomBase62(secretLen)

	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return "", Token{}, fmt.Errorf("create app token: %w", err)
	}
	defer tx.Rollback()
	var live int
	err = tx.QueryRowContext(ctx, s.d.rebind(`SELECT COUNT(*) FROM app_tokens
		WHERE owner = ? AND revoked_at = 0 AND expires_at > ?`), t.Owner, toMicro(now)).Scan(&live)
	if err != nil {
		return "", Token{}, fmt.Errorf("create app token: count live tokens: %w", err)
	}
	if live >= s.maxLive {
		return "", Token{}, fmt.Errorf("%w: %s has %d (limit %d)", ErrTooMany, t.Owner, live, s.maxLive)
	}
	// 71 random bits make a collision unlikely, not impossible.
	for i := 0; ; i++ {
		t.ID = randomBase62(idLen)
		var one int
		err := tx.QueryRowContext(ctx, s.d.rebind(`SELECT 1 FROM app_tokens WHERE id = ?`), t.ID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return "", Token{}, fmt.Errorf("create app token: %w", err)
		}
		if i == 3 {
			return "", Token{}, errors.New("create app token: no unused id found")
		}
	}
	_, err = tx.ExecContext(ctx, s.d.rebind(`INSERT INTO app_tokens
		(id, owner, label, senders, secret_hash, created_at, created_from, expires_at, creator)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		t.ID, t.Owner, t.Label, string(senders), hex.EncodeToString(s.hash(secret)),
		toMicro(t.CreatedAt), t.CreatedFrom, toMicro(t.ExpiresAt), t.Creator)
	if err != nil {
		return "", Token{}, fmt.Errorf("create app token: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return "", Token{}, fmt.Errorf("create app token: %w", err)
	}
	return formatToken(s.prefix, t.ID, secret), t, nil
}

// newToken validates n and returns the token to store, without ID.
func newToken(n NewToken, now time.Time) (Token, error) {
	var errs []error
	if n.Owner.IsZero() {
		errs = append(errs, errors.New("owner is required"))
	}
	if strings.TrimSpace(n.Creator) == "" || len(n.Creator) > maxTextLen || !printable(n.Creator) {
		errs = append(errs, fmt.Errorf("creator is required: at most %d bytes without control characters", maxTextLen))
	}
	label := strings.TrimSpace(n.Label)
	if c := utf8.RuneCountInString(label); c == 0 || c > maxLabelRunes {
		errs = append(errs, fmt.Errorf("label must be 1 to %d characters", maxLabelRunes))
	} else if !printable(label) {
		errs = append(errs, errors.New("label must be valid UTF-8 without control or format characters (such as bidi overrides)"))
	}
	if len(n.CreatedFrom) > maxTextLen || !printable(n.CreatedFrom) {
		errs = append(errs, fmt.Errorf("created-from must be at most %d bytes without control characters", maxTextLen))
	}
	var senders []string
	if len(n.Senders) > maxSenders {
		errs = append(errs, fmt.Errorf("at most %d senders", maxSenders))
	}
	for _, a := range n.Senders {
		if a.IsZero() {
			errs = append(errs, errors.New("sender: empty address"))
		} else if !slices.Contains(senders, a.String()) {
			senders = append(senders, a.String())
		}
	}
	if len(n.Senders) == 0 && !n.Owner.IsZero() {
		senders = []string{n.Owner.String()}
	}
	expires := fromMicro(toMicro(n.ExpiresAt))
	if expires.IsZero() {
		errs = append(errs, errors.New("expiry is required"))
	} else if !expires.After(now) {
		errs = append(errs, errors.New("expiry must be in the future"))
	}
	if err := errors.Join(errs...); err != nil {
		return Token{}, fmt.Errorf("%w: %w", ErrValidation, err)
	}
	return Token{
		Owner:       n.Owner.String(),
		Creator:     n.Creator,
		Label:       label,
		Senders:     senders,
		CreatedAt:   now,
		CreatedFrom: n.CreatedFrom,
		ExpiresAt:   expires,
	}, nil
}

// printable reports whether s is valid UTF-8 without control (Cc) or
// format (Cf) characters: no bidi overrides, zero-width joiners or
// invisible marks that make a label read differently than it is.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool {
		return unicode.In(r, unicode.Cc, unicode.Cf)
	})
}

// Check authenticates an SMTP AUTH PLAIN or LOGIN login: username and the
// app token plaintext as password. remote is the client's address, kept as
// the token's last-used address.
//
// A malformed token fails before any database access. Otherwise the token is
// read from the database on every call, so a revocation by another process
// takes effect at once. The errors wrap ErrInvalid (not a token, unknown,
// wrong secret, or another user's), then ErrRevoked or ErrExpired: those two
// are reported only to someone who knows the secret. A success is recorded
// in memory and written to the database by the flusher; Check itself does
// not write. The returned token includes the uses not yet written.
func (s *Store) Check(ctx context.Context, username, plaintext, remote string) (Token, error) {
	id, secret, err := ParseToken(s.prefix, plaintext)
	if err != nil {
		return Token{}, err
	}
	mac := s.hash(secret)
	t, stored, err := scanToken(s.check.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, fmt.Errorf("%w: token %s: unknown id", ErrInvalid, id)
	}
	if err != nil {
		return Token{}, fmt.Errorf("look up app token %s: %w", id, err)
	}
	want, err := hex.DecodeString(stored)
	if err != nil {
		return Token{}, fmt.Errorf("app token %s: stored hash is not hex", id)
	}
	if !hmac.Equal(mac, want) {
		return Token{}, fmt.Errorf("%w: token %s: wrong secret", ErrInvalid, id)
	}
	// The username is compared as an address, exactly: strings.EqualFold
	// would let "\u212Aevin@…" (Kelvin sign) stand for "kevin@…".
	if u, err := mailaddr.Parse(username); err != nil || u.String() != t.Owner {
		return Token{}, fmt.Errorf("%w: token %s: username is not the owner", ErrInvalid, id)
	}
	now := s.now()
	if !t.RevokedAt.IsZero() {
		return Token{}, fmt.Errorf("%w: token %s at %s", ErrRevoked, id, t.RevokedAt.Format(time.RFC3339))
	}
	if !now.Before(t.ExpiresAt) {
		return Token{}, fmt.Errorf("%w: token %s at %s", ErrExpired, id, t.ExpiresAt.Format(time.RFC3339))
	}
	s.mu.Lock()
	u := s.pending[id].merge(use{at: fromMicro(now.UnixMicro()), from: remote, count: 1})
	s.pending[id] = u
	s.mu.Unlock()
	return t.withUse(u), nil
}

// Get returns the token with the id, including uses not yet flushed, or
// ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Token, error) {
	s.flushMu.RLock()
	defer s.flushMu.RUnlock()
	row := s.rdb.QueryRowContext(ctx, s.d.rebind(`SELECT `+tokenColumns+` FROM app_tokens WHERE id = ?`), id)
	t, _, err := scanToken(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Token{}, fmt.Errorf("get app token %s: %w", id, err)
	}
	s.mu.Lock()
	t = t.withUse(s.pending[id])
	s.mu.Unlock()
	return t, nil
}

// ListOwned returns the tokens of owner, newest first, including uses not
// yet flushed. Revoked and expired tokens are included; see Token.Live.
func (s *Store) ListOwned(ctx context.Context, owner mailaddr.Address) ([]Token, error) {
	if owner.IsZero() {
		return nil, fmt.Errorf("%w: list: owner is empty", ErrValidation)
	}
	return s.list(ctx, ` WHERE owner = ?`, owner.String())
}

// ListAll returns every token, newest first: for administrators.
func (s *Store) ListAll(ctx context.Context) ([]Token, error) {
	return s.list(ctx, "")
}

func (s *Store) list(ctx context.Context, where string, args ...any) ([]Token, error) {
	s.flushMu.RLock()
	defer s.flushMu.RUnlock()
	q := `SELECT ` + tokenColumns + ` FROM app_tokens` + where + ` ORDER BY created_at DESC, id DESC`
	rows, err := s.rdb.QueryContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("list app tokens: %w", err)
	}
	defer rows.Close()
	var ts []Token
	for rows.Next() {
		t, _, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list app tokens: %w", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list app tokens: %w", err)
	}
	s.mu.Lock()
	for i := range ts {
		ts[i] = ts[i].withUse(s.pending[ts[i].ID])
	}
	s.mu.Unlock()
	return ts, nil
}

// RevokeOwned revokes the token with the id on behalf of its owner; by
// names who asked ("iss#sub") and is stored as "owner:<by>". A token that
// does not exist or belongs to someone else gives ErrNotFound; revoking a
// revoked token succeeds and keeps the first revocation.
func (s *Store) RevokeOwned(ctx context.Context, owner mailaddr.Address, id, by string) error {
	if owner.IsZero() {
		return fmt.Errorf("%w: revoke: owner is empty", ErrValidation)
	}
	return s.revoke(ctx, owner.String(), id, "owner:"+by)
}

// RevokeAsAdmin revokes anyone's token with the id; by names the
// administrator ("cli:<os user>") and is stored as "admin:<by>".
func (s *Store) RevokeAsAdmin(ctx context.Context, id, by string) error {
	return s.revoke(ctx, "", id, "admin:"+by)
}

func (s *Store) revoke(ctx context.Context, owner, id, by string) error {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("revoke app token %s: %w", id, err)
	}
	defer tx.Rollback()
	var tokenOwner string
	var revoked int64
	err = tx.QueryRowContext(ctx, s.d.rebind(`SELECT owner, revoked_at FROM app_tokens WHERE id = ?`), id).
		Scan(&tokenOwner, &revoked)
	if errors.Is(err, sql.ErrNoRows) || err == nil && owner != "" && owner != tokenOwner {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("revoke app token %s: %w", id, err)
	}
	if revoked != 0 {
		return nil
	}
	_, err = tx.ExecContext(ctx, s.d.rebind(`UPDATE app_tokens SET revoked_at = ?, revoked_by = ? WHERE id = ?`),
		s.now().UnixMicro(), by, id)
	if err != nil {
		return fmt.Errorf("revoke app token %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("revoke app token %s: %w", id, err)
	}
	return nil
}

// RevokeAllOwned revokes every live token of owner and returns how many
// there were. by is stored as "admin:<by>" when admin is true (the CLI),
// else as "owner:<by>" (the person, in the web app).
func (s *Store) RevokeAllOwned(ctx context.Context, owner mailaddr.Address, by string, admin bool) (int, error) {
	if owner.IsZero() {
		return 0, fmt.Errorf("%w: revoke all: owner is empty", ErrValidation)
	}
	if admin {
		by = "admin:" + by
	} else {
		by = "owner:" + by
	}
	now := s.now().UnixMicro()
	res, err := s.wdb.ExecContext(ctx, s.d.rebind(`UPDATE app_tokens SET revoked_at = ?, revoked_by = ?
		WHERE owner = ? AND revoked_at = 0 AND expires_at > ?`), now, by, owner.String(), now)
	if err != nil {
		return 0, fmt.Errorf("revoke all app tokens of %s: %w", owner, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("revoke all app tokens of %s: %w", owner, err)
	}
	return int(n), nil
}

// Flush writes the uses that Check recorded in memory to the database now,
// in one transaction. Uses of a token revoked in the meantime are written
// too. If the write fails, the uses are kept for the next Flush.
func (s *Store) Flush(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	batch := s.pending
	if len(batch) > 0 {
		s.pending = make(map[string]use)
	}
	s.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := s.writeUses(ctx, batch); err != nil {
		s.mu.Lock()
		for id, u := range batch {
			s.pending[id] = s.pending[id].merge(u)
		}
		s.mu.Unlock()
		return fmt.Errorf("flush app token uses: %w", err)
	}
	return nil
}

func (s *Store) writeUses(ctx context.Context, batch map[string]use) error {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Another process may have written a later use of the same token.
	stmt, err := tx.PrepareContext(ctx, s.d.rebind(`UPDATE app_tokens SET
		use_count = use_count + ?,
		last_used_from = CASE WHEN last_used_at <= ? THEN ? ELSE last_used_from END,
		last_used_at = CASE WHEN last_used_at <= ? THEN ? ELSE last_used_at END
		WHERE id = ?`))
	if err != nil {
		return err
	}
	defer stmt.Close()
	for _, id := range slices.Sorted(maps.Keys(batch)) {
		u := batch[id]
		at := toMicro(u.at)
		if _, err := stmt.ExecContext(ctx, u.count, at, u.from, at, at, id); err != nil {
			return err
		}
	}
	return tx.Commit()
}
