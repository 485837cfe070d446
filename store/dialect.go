package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// This file holds every difference between the SQL dialects. The queries in
// the rest of the package are written once, with "?" placeholders, in SQL
// that SQLite and PostgreSQL both accept; dex keeps its dialect differences
// in a single flavor type the same way (storage/sql/sql.go).
//
// Adding PostgreSQL (github.com/jackc/pgx/v5/stdlib, driver name "pgx") means
// a case in openDB that opens one pool for reads and writes, with a dialect
// whose numbered field is true. Create's per-owner limit then also needs the
// owner serialised, for example with pg_advisory_xact_lock(hashtext(owner)),
// because PostgreSQL's default isolation does not serialise two inserts the
// way SQLite's single writer does; and migrate needs an advisory lock so that
// two nodes starting at once do not both migrate.

// A dialect is what differs between SQL backends.
type dialect struct {
	name     string
	numbered bool // placeholders are $1, $2, … rather than ?
}

// rebind rewrites the "?" placeholders of query for d. Queries in this
// package contain no "?" inside string literals.
func (d dialect) rebind(query string) string {
	if !d.numbered || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// supportedDrivers is listed in the error for an unknown driver.
const supportedDrivers = `"sqlite"`

// openDB connects to the database. It returns a pool for reads and one for
// writes; they may be the same pool.
// where names the database for messages, without credentials.
func openDB(ctx context.Context, driver, dsn string, opts Options) (d dialect, rdb, wdb *sql.DB, where string, err error) {
	switch driver {
	case "sqlite":
		rdb, wdb, where, err = openSQLite(ctx, dsn, opts)
		return dialect{name: "sqlite"}, rdb, wdb, where, err
	case "postgres", "postgresql", "pgx":
		return dialect{}, nil, nil, "", fmt.Errorf("store: driver %q is not supported yet (supported: %s)", driver, supportedDrivers)
	default:
		return dialect{}, nil, nil, "", fmt.Errorf("store: unknown driver %q (supported: %s)", driver, supportedDrivers)
	}
}

// openSQLite opens dsn, a file path or a "file:" URI, with modernc.org/sqlite.
//
// SQLite allows many readers but one writer. The database runs in WAL mode,
// so reads never wait for the writer, with a busy timeout of 5 s for the
// writers of other processes (the admin CLI). Writes in this process go
// through a pool of one connection whose transactions begin IMMEDIATE: they
// take the write lock at BEGIN and wait there for it, instead of failing
// with SQLITE_BUSY when a read inside the transaction tries to upgrade.
func openSQLite(ctx context.Context, dsn string, opts Options) (rdb, wdb *sql.DB, where string, err error) {
	path, query, _ := strings.Cut(dsn, "?")
	if u, ok := strings.CutPrefix(path, "file:"); ok {
		if p, err := url.PathUnescape(u); err == nil {
			u = p
		}
		// file:///abs, file://localhost/abs and file:rel
		path = strings.TrimPrefix(strings.TrimPrefix(u, "//localhost"), "//")
	}
	if path == "" || path == ":memory:" || strings.Contains(query, "mode=memory") {
		return nil, nil, "", fmt.Errorf("store: sqlite dsn %q: need a file (in-memory databases are not shared between connections)", dsn)
	}
	where = path
	if abs, err := filepath.Abs(path); err == nil {
		where = abs
	}
	switch _, err := os.Stat(path); {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist) && (opts.MustExist || opts.ReadOnly):
		return nil, nil, where, fmt.Errorf("store: database %s does not exist (not created: check store.dsn and the config file; relative paths are relative to the config file's directory)", where)
	case errors.Is(err, fs.ErrNotExist):
		// Created here, 0600, so that SQLite, which gives its -wal and
		// -shm files the database's mode, never makes them readable.
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, nil, where, fmt.Errorf("create database directory: %w", err)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, nil, where, fmt.Errorf("create database: %w", err)
		}
		if f != nil {
			f.Close()
		}
	default:
		return nil, nil, where, fmt.Errorf("store: database %s: %w", where, err)
	}

	if opts.ReadOnly {
		// A URI with mode=ro: listing works on a file this process may
		// only read. No journal-mode pragma: it would need to write.
		u := (&url.URL{Scheme: "file", Path: path}).String()
		if !filepath.IsAbs(path) {
			u = "file:" + (&url.URL{Path: path}).EscapedPath()
		}
		rdb, err = sql.Open("sqlite", u+"?mode=ro&_busy_timeout=5000")
		if err != nil {
			return nil, nil, where, fmt.Errorf("open sqlite: %w", err)
		}
		rdb.SetMaxOpenConns(2)
		if err := rdb.PingContext(ctx); err != nil {
			rdb.Close()
			return nil, nil, where, fmt.Errorf("open sqlite %s read-only: %w", where, err)
		}
		return rdb, rdb, where, nil
	}

	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	// synchronous=FULL: a committed revocation survives a power failure
	// (with NORMAL in WAL mode the last transactions may roll back).
	params := "_busy_timeout=5000&_journal_mode=WAL&_synchronous=FULL&_foreign_keys=1"

	wdb, err = sql.Open("sqlite", dsn+sep+params+"&_txlock=immediate")
	if err != nil {
		return nil, nil, where, fmt.Errorf("open sqlite: %w", err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	// Ping sets WAL mode before the readers connect.
	if err := wdb.PingContext(ctx); err != nil {
		wdb.Close()
		return nil, nil, where, fmt.Errorf("open sqlite %s: %w", where, err)
	}

	rdb, err = sql.Open("sqlite", dsn+sep+params)
	if err != nil {
		wdb.Close()
		return nil, nil, where, fmt.Errorf("open sqlite: %w", err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	rdb.SetMaxOpenConns(n)
	rdb.SetMaxIdleConns(n) // reconnecting would rerun the pragmas
	if err := rdb.PingContext(ctx); err != nil {
		err = errors.Join(err, rdb.Close(), wdb.Close())
		return nil, nil, where, fmt.Errorf("open sqlite %s: %w", where, err)
	}
	return rdb, wdb, where, nil
}
