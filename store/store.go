// Package store keeps app tokens in SQL: passwords for mail clients that
// cannot do OAuth 2.0 (Apple Mail, Outlook, printers, scripts), given as the
// password of SMTP AUTH PLAIN (RFC 4616) or LOGIN.
//
// Only an HMAC-SHA256 of each token's secret is stored, keyed with a server
// secret (see LoadKey), so a copy of the database alone does not let anyone
// send mail. The database is SQLite (modernc.org/sqlite, no cgo); the SQL is
// kept portable so that PostgreSQL can be added as a second driver.
//
// The store also keeps the web app's sign-in sessions and consent nonces
// (sessions.go), so that signing out holds on every node, and records the
// fingerprint of the token key, so that a database is never used with
// another key by mistake (keycheck.go).
//
// A Store is safe for concurrent use, and several processes may open the
// same SQLite file: the gateway, and the admin CLI beside it.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure a Store. Key is required; the other fields have
// defaults.
type Options struct {
	// Prefix starts every token: 1 to 13 characters of [a-z0-9]. If empty,
	// DefaultPrefix ("smtpgate") is used. Changing it invalidates every
	// token issued before.
	Prefix string
	// Key is the HMAC-SHA256 key for the stored secret hashes, at least 32
	// bytes; see LoadKey. Changing it invalidates every token.
	Key []byte
	// MaxLivePerUser limits the tokens an owner may have that are neither
	// revoked nor expired. If 0, 20 is used.
	MaxLivePerUser int
	// FlushInterval is how often the last use of tokens, recorded in
	// memory by Check, is written to the database. If 0, 5s is used.
	FlushInterval time.Duration
	// MustExist refuses to create the database: the admin CLI uses it, so
	// that a wrong path is an error, not a new empty store.
	MustExist bool
	// ReadOnly opens the database for reading only: no migration, no
	// writes, no flusher. The schema must be current. For listing tokens
	// from a database the caller may not write.
	ReadOnly bool
	// Logger receives the schema migrations applied (Info) and failed
	// background flushes (Warn). If nil, nothing is logged.
	Logger *slog.Logger
	// Now returns the current time. If nil, time.Now is used. Tests set it.
	Now func() time.Time
}

// Defaults for Options.
const (
	DefaultMaxLivePerUser = 20
	DefaultFlushInterval  = 5 * time.Second
	minKeyLen             = 32
)

// Default app token lifetimes, for the callers that choose expiries (the
// web app and the CLI): 90 days, and at most 365.
const (
	DefaultTTL    = 90 * 24 * time.Hour
	DefaultMaxTTL = 365 * 24 * time.Hour
)

// Validate reports the problems of the settings in o, joined, without
// I/O: the prefix, the per-user limit and the flush interval. Open also
// checks the key.
func (o Options) Validate() error {
	var errs []error
	if o.Prefix != "" {
		if err := validatePrefix(o.Prefix); err != nil {
			errs = append(errs, err)
		}
	}
	if o.MaxLivePerUser < 0 {
		errs = append(errs, fmt.Errorf("store: MaxLivePerUser %d is negative", o.MaxLivePerUser))
	}
	if o.FlushInterval < 0 {
		errs = append(errs, fmt.Errorf("store: FlushInterval %v is negative", o.FlushInterval))
	}
	return errors.Join(errs...)
}

// A Store holds app tokens. Create one with Open.
type Store struct {
	d        dialect
	rdb, wdb *sql.DB // reads, writes (the same pool unless SQLite)
	check    *sql.Stmt
	log      *slog.Logger
	now      func() time.Time
	prefix   string
	key      []byte
	maxLive  int
	where    string // what Describe says
	readOnly bool

	mu      sync.Mutex
	pending map[string]use // token id → uses not yet flushed

	// flushMu makes a flush atomic for Get and List, which would otherwise
	// count a use twice or not at all while it is being written.
	flushMu sync.RWMutex

	stop      chan struct{}
	done      chan struct{}
	flushed   chan struct{} // signalled after each flusher run, for tests
	closeOnce sync.Once
	closeErr  error
}

// A use is what Check records in memory for the flusher.
type use struct {
	at    time.Time
	from  string
	count int64
}

// merge adds u to v: counts add up, the later use wins.
func (v use) merge(u use) use {
	v.count += u.count
	if !u.at.Before(v.at) {
		v.at, v.from = u.at, u.from
	}
	return v
}

// Open connects to the database, migrates its schema to the latest version
// and starts the flusher that writes last-used times. driver is "sqlite",
// with dsn a file path (created with its directory if missing) or a
// "file:" URI. Close the Store when done.
func Open(ctx context.Context, driver, dsn string, opts Options) (*Store, error) {
	s := &Store{
		log:      opts.Logger,
		now:      opts.Now,
		prefix:   opts.Prefix,
		key:      slices.Clone(opts.Key),
		maxLive:  opts.MaxLivePerUser,
		readOnly: opts.ReadOnly,
		pending:  make(map[string]use),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		flushed:  make(chan struct{}, 1),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.maxLive == 0 {
		s.maxLive = DefaultMaxLivePerUser
	}
	interval := opts.FlushInterval
	if interval == 0 {
		interval = DefaultFlushInterval
	}
	var errs []error
	if err := validatePrefix(s.prefix); err != nil {
		errs = append(errs, err)
	}
	if len(s.key) < minKeyLen {
		errs = append(errs, fmt.Errorf("store: key is %d bytes, need at least %d", len(s.key), minKeyLen))
	}
	if s.maxLive < 0 {
		errs = append(errs, fmt.Errorf("store: MaxLivePerUser %d is negative", s.maxLive))
	}
	if interval < 0 {
		errs = append(errs, fmt.Errorf("store: FlushInterval %v is negative", interval))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	var err error
	s.d, s.rdb, s.wdb, s.where, err = openDB(ctx, driver, dsn, opts)
	if err != nil {
		return nil, err
	}
	if opts.ReadOnly {
		err = s.checkSchema(ctx)
	} else {
		err = s.migrate(ctx)
	}
	if err != nil {
		s.closeDB()
		return nil, fmt.Errorf("%s database %s: %w", driver, s.where, err)
	}
	if err := s.checkKey(ctx); err != nil {
		s.closeDB()
		return nil, err
	}
	s.check, err = s.rdb.PrepareContext(ctx, s.d.rebind(`SELECT `+tokenColumns+` FROM app_tokens WHERE id = ?`))
	if err != nil {
		s.closeDB()
		return nil, fmt.Errorf("prepare check query: %w", err)
	}
	if opts.ReadOnly {
		close(s.done)
	} else {
		go s.flusher(interval)
	}
	return s, nil
}

// Describe names the database the Store opened, such as
// "sqlite /var/lib/smtpgate/smtpgate.db", for the admin to see which one
// a command worked on.
func (s *Store) Describe() string { return s.d.name + " " + s.where }

// Close writes the pending last-used updates, stops the flusher and closes
// the database. Calling it again returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		if s.readOnly {
			s.closeErr = errors.Join(s.check.Close(), s.closeDB())
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var errs []error
		if err := s.Flush(ctx); err != nil {
			errs = append(errs, fmt.Errorf("final flush: %w", err))
		}
		errs = append(errs, s.check.Close(), s.closeDB())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

func (s *Store) closeDB() error {
	if s.rdb == s.wdb {
		return s.rdb.Close()
	}
	return errors.Join(s.rdb.Close(), s.wdb.Close())
}

// flusher writes pending uses every interval until Close.
func (s *Store) flusher(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), interval+10*time.Second)
			if err := s.Flush(ctx); err != nil {
				s.log.Warn("app token last-used flush failed; will retry", "err", err)
			}
			cancel()
			select {
			case s.flushed <- struct{}{}:
			default:
			}
		}
	}
}

//go:embed schema/*.sql
var schemaFS embed.FS

// A migration is one file of schema/, named NNNN_description.sql.
type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	files, err := fs.Glob(schemaFS, "schema/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, f := range files {
		name := path.Base(f)
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number and '_'", name)
		}
		b, err := schemaFS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s have the same number", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// migrate applies the migrations the database has not seen, in order, in
// one transaction, and records each in schema_migrations. On SQLite the
// transaction takes the write lock first, so two processes opening the same
// new file do not both migrate it.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    BIGINT NOT NULL PRIMARY KEY,
	name       TEXT   NOT NULL,
	applied_at BIGINT NOT NULL
)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if latest := ms[len(ms)-1].version; current > latest {
		return fmt.Errorf("database schema version %d is newer than this program's %d", current, latest)
	}
	var applied []string
	for _, m := range ms {
		if m.version <= current {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("apply %s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
			m.version, m.name, s.now().UnixMicro()); err != nil {
			return fmt.Errorf("record %s: %w", m.name, err)
		}
		applied = append(applied, m.name)
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	for _, name := range applied {
		s.log.Info("applied schema migration", "migration", name)
	}
	return nil
}
