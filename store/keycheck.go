package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrKeyMismatch is returned by Open when the database holds app tokens
// made with another token key than Options.Key.
var ErrKeyMismatch = errors.New("store: the token key does not match the database")

// KeyFingerprint identifies a token key without revealing it: the first 8
// bytes of an HMAC of a fixed text, in hex.
func KeyFingerprint(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("smtpgate token key fingerprint v1"))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

const keyFingerprintName = "key_fingerprint"

// checkKey compares the key's fingerprint with the one the database
// recorded, and records it on first use. A database without tokens takes
// a new key (with a warning): nothing is lost. One with tokens refuses it,
// since every token would silently stop working.
func (s *Store) checkKey(ctx context.Context) error {
	fp := KeyFingerprint(s.key)
	var recorded string
	err := s.rdb.QueryRowContext(ctx, s.d.rebind(`SELECT value FROM store_meta WHERE name = ?`), keyFingerprintName).Scan(&recorded)
	switch {
	case err == nil && recorded == fp:
		return nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("store: read key fingerprint: %w", err)
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, `SELECT COUNT(*) FROM app_tokens`).Scan(&n); err != nil {
		return fmt.Errorf("store: count app tokens: %w", err)
	}
	if recorded != "" && n > 0 {
		return fmt.Errorf("%w: %s holds %d app token(s) made with the key of fingerprint %s, but tokens.key_file has fingerprint %s. "+
			"Restore the key file this database was used with; to start over instead, move the database away (every app token stops working)",
			ErrKeyMismatch, s.where, n, recorded, fp)
	}
	if s.readOnly {
		return nil // nothing recorded yet, and nothing can be
	}
	if recorded != "" {
		s.log.Warn("store: the token key changed; the database holds no tokens, so the new key is recorded", "old", recorded, "new", fp)
	}
	// Upsert: SQLite and PostgreSQL both accept ON CONFLICT … DO UPDATE.
	_, err = s.wdb.ExecContext(ctx, s.d.rebind(`INSERT INTO store_meta (name, value) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value`), keyFingerprintName, fp)
	if err != nil {
		return fmt.Errorf("store: record key fingerprint: %w", err)
	}
	return nil
}

// checkSchema makes sure a database opened read-only has the schema this
// program reads.
func (s *Store) checkSchema(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	var current int
	if err := s.rdb.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if latest := ms[len(ms)-1].version; current != latest {
		return fmt.Errorf("schema version %d, this program reads %d: open it once with write access (smtpgate serve) to migrate it", current, latest)
	}
	return nil
}
