package store

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/mailaddr"
)

func testKey() []byte { return []byte("0123456789abcdef0123456789abcdef") }

func openTest(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	if opts.Key == nil {
		opts.Key = testKey()
	}
	s, err := Open(context.Background(), "sqlite", path, opts)
	if err != nil {
		t.Fatalf("Open(sqlite, %q) = %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenOptions(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		driver string
		dsn    string
		opts   Options
		want   string // in the error
	}{
		{"unknown driver", "mysql", filepath.Join(dir, "a.db"), Options{Key: testKey()}, `unknown driver "mysql" (supported: "sqlite")`},
		{"postgres", "postgres", "postgres://localhost/gate", Options{Key: testKey()}, "not supported yet"},
		{"no key", "sqlite", filepath.Join(dir, "b.db"), Options{}, "key is 0 bytes"},
		{"short key", "sqlite", filepath.Join(dir, "b.db"), Options{Key: testKey()[:31]}, "key is 31 bytes"},
		{"prefix upper", "sqlite", filepath.Join(dir, "b.db"), Options{Key: testKey(), Prefix: "Gate"}, "a-z and 0-9"},
		{"prefix underscore", "sqlite", filepath.Join(dir, "b.db"), Options{Key: testKey(), Prefix: "my_gate"}, "a-z and 0-9"},
		{"prefix too long", "sqlite", filepath.Join(dir, "b.db"), Options{Key: testKey(), Prefix: "abcdefghijklmn"}, "1 to 13"},
		{"negative limit", "sqlite", filepath.Join(dir, "b.db"), Options{Key: testKey(), MaxLivePerUser: -1}, "negative"},
		{"memory", "sqlite", ":memory:", Options{Key: testKey()}, "need a file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.Context(), tc.driver, tc.dsn, tc.opts)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q, %q) = nil error, want one containing %q", tc.driver, tc.dsn, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open(%q, %q) = %v, want an error containing %q", tc.driver, tc.dsn, err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "b.db")); err == nil {
		t.Errorf("Open with bad options created the database file")
	}
}

func TestOpenCreatesDirAndMigratesOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "var", "lib", "smtpgate", "tokens.db")
	for i := range 3 {
		s := openTest(t, path, Options{})
		var n int
		var name string
		err := s.rdb.QueryRow(`SELECT COUNT(*), MAX(name) FROM schema_migrations`).Scan(&n, &name)
		if err != nil || n != 2 || name != "0002_ownership_sessions.sql" {
			t.Errorf("open %d: schema_migrations = %d rows, last %q, %v; want 2, 0002_ownership_sessions.sql", i, n, name, err)
		}
		var mode string
		if err := s.wdb.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
			t.Errorf("journal_mode = %q, %v; want wal", mode, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenFileURI(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "tokens.db")
	s := openTest(t, "file:"+path+"?cache=private", Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("file: URI did not create %s: %v", path, err)
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	s := openTest(t, path, Options{})
	if _, err := s.wdb.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err := Open(t.Context(), "sqlite", path, Options{Key: testKey()})
	if err == nil {
		s.Close()
		t.Fatal("Open(database from the future) = nil error")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open(database from the future) = %v, want a newer-schema error", err)
	}
}

func TestRebind(t *testing.T) {
	tests := []struct {
		d    dialect
		in   string
		want string
	}{
		{dialect{name: "sqlite"}, "a = ? AND b = ?", "a = ? AND b = ?"},
		{dialect{name: "postgres", numbered: true}, "a = ? AND b = ?", "a = $1 AND b = $2"},
		{dialect{name: "postgres", numbered: true}, "SELECT 1", "SELECT 1"},
	}
	for _, tc := range tests {
		if got := tc.d.rebind(tc.in); got != tc.want {
			t.Errorf("%s.rebind(%q) = %q, want %q", tc.d.name, tc.in, got, tc.want)
		}
	}
}

// Check reads, it does not write: the uses reach the database on Flush.
func TestCheckDoesNotWrite(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "tokens.db"), Options{FlushInterval: time.Hour})
	plain, tok, err := s.Create(t.Context(), NewToken{Owner: mailaddr.MustParse("a@example.com"), Creator: "test", Label: "x", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Check(t.Context(), "a@example.com", plain, "192.0.2.1"); err != nil {
			t.Fatal(err)
		}
	}
	dbCount := func() int64 {
		var n int64
		if err := s.rdb.QueryRow(`SELECT use_count FROM app_tokens WHERE id = ?`, tok.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := dbCount(); n != 0 {
		t.Errorf("use_count in the database before Flush = %d, want 0", n)
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := dbCount(); n != 3 {
		t.Errorf("use_count in the database after Flush = %d, want 3", n)
	}
}

// The flusher writes on its own, and a failed flush keeps the uses.
func TestFlusher(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "tokens.db"), Options{FlushInterval: 10 * time.Millisecond})
	plain, tok, err := s.Create(t.Context(), NewToken{Owner: mailaddr.MustParse("a@example.com"), Creator: "test", Label: "x", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Check(t.Context(), "a@example.com", plain, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case <-s.flushed:
		case <-timeout:
			t.Fatal("the flusher did not write the use within 10s")
		}
		var n int64
		if err := s.rdb.QueryRow(`SELECT use_count FROM app_tokens WHERE id = ?`, tok.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
	}

	failed := map[string]use{tok.ID: {at: time.Now(), from: "192.0.2.2", count: 2}}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	s.mu.Lock()
	s.pending = failed
	s.mu.Unlock()
	if err := s.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Flush(cancelled) = %v, want %v", err, context.Canceled)
	}
	got, err := s.Get(t.Context(), tok.ID)
	if err != nil || got.UseCount != 3 {
		t.Errorf("Get after failed Flush = UseCount %d, %v; want 3 (kept in memory)", got.UseCount, err)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	path := filepath.Join(dir, "hmac.key")
	if _, err := ReadKey(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadKey(missing) = %v, want fs.ErrNotExist: it must never create a key", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadKey created %s", path)
	}
	key := NewKey()
	if err := WriteKey(path, key); err != nil {
		t.Fatalf("WriteKey = %v", err)
	}
	if runtime.GOOS != "windows" {
		for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("mode of %s = %#o, want %#o", p, got, want)
			}
		}
	}
	again, err := ReadKey(path)
	if err != nil || string(again) != string(key) {
		t.Errorf("ReadKey = %x, %v; want %x", again, err, key)
	}
	// A second writer never replaces the key, and leaves no temp file.
	if err := WriteKey(path, NewKey()); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteKey over an existing key = %v, want fs.ErrExist", err)
	}
	if again, _ := ReadKey(path); string(again) != string(key) {
		t.Error("WriteKey replaced an existing key")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("key directory holds %d entries, want only the key (no temp files)", len(ents))
	}

	if runtime.GOOS != "windows" {
		open := filepath.Join(dir, "open.key")
		if err := os.WriteFile(open, testKey(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(open, 0o644); err != nil { // despite the umask
			t.Fatal(err)
		}
		if k, err := ReadKey(open); err == nil {
			t.Errorf("ReadKey(mode 0644) = %x, nil; want an error", k)
		}
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, testKey()[:31], 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := ReadKey(short); err == nil {
		t.Errorf("ReadKey(31 bytes) = %x, nil; want an error", k)
	}
}

// A database with tokens refuses another key with a message that says
// what to do; one without tokens takes the new key.
func TestKeyFingerprint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	k1, k2 := NewKey(), NewKey()
	s, err := Open(t.Context(), "sqlite", path, Options{Key: k1})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// No tokens yet: a new key is recorded.
	s, err = Open(t.Context(), "sqlite", path, Options{Key: k2})
	if err != nil {
		t.Fatalf("Open(empty database, new key) = %v", err)
	}
	if _, _, err := s.Create(t.Context(), NewToken{Owner: mailaddr.MustParse("a@example.com"), Creator: "test", Label: "x", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(t.Context(), "sqlite", path, Options{Key: k1})
	if !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("Open(database with tokens, other key) = %v, want ErrKeyMismatch", err)
	}
	for _, want := range []string{path, KeyFingerprint(k1), KeyFingerprint(k2), "Restore the key file", "move the database away"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := Open(t.Context(), "sqlite", path, Options{Key: k1, ReadOnly: true}); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("Open(read-only, other key) = %v, want ErrKeyMismatch", err)
	}
	s, err = Open(t.Context(), "sqlite", path, Options{Key: k2})
	if err != nil {
		t.Fatalf("Open(the right key) = %v", err)
	}
	s.Close()
}

// The database file and its WAL are 0600, writes are synchronous=FULL,
// MustExist never creates a file, and a read-only file can be listed.
func TestDatabaseFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "tokens.db")
	if _, err := Open(t.Context(), "sqlite", path, Options{Key: testKey(), MustExist: true}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open(MustExist, missing) = %v, want does not exist", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open(MustExist) created %s", path)
	}
	s, err := Open(t.Context(), "sqlite", path, Options{Key: testKey()})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := filepath.Abs(path); s.Describe() != "sqlite "+got {
		t.Errorf("Describe = %q, want sqlite %s", s.Describe(), got)
	}
	if _, _, err := s.Create(t.Context(), NewToken{Owner: mailaddr.MustParse("a@example.com"), Creator: "test", Label: "x", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, db := range []*sql.DB{s.rdb, s.wdb} {
		var sync int
		if err := db.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil || sync != 2 {
			t.Errorf("PRAGMA synchronous = %d, %v; want 2 (FULL)", sync, err)
		}
	}
	if runtime.GOOS != "windows" {
		for _, p := range []string{path, path + "-wal"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o600 {
				t.Errorf("mode of %s = %#o, want 0600", p, got)
			}
		}
	}
	s.Close()
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	// Root may write whatever the mode says, so the store itself must not
	// try: mode=ro refuses every write.
	ro, err := Open(t.Context(), "sqlite", path, Options{Key: testKey(), ReadOnly: true})
	if err != nil {
		t.Fatalf("Open(ReadOnly, a 0400 file) = %v", err)
	}
	defer ro.Close()
	if ts, err := ro.ListAll(t.Context()); err != nil || len(ts) != 1 {
		t.Errorf("ListAll read-only = %d tokens, %v; want 1", len(ts), err)
	}
	if _, err := ro.RevokeAllOwned(t.Context(), mailaddr.MustParse("a@example.com"), "test", true); err == nil {
		t.Error("RevokeAllOwned on a read-only store succeeded")
	}
}

func TestFormatParse(t *testing.T) {
	for _, prefix := range []string{"smtpgate", "a", "abcdefghij123"} {
		id, secret := randomBase62(idLen), randomBase62(secretLen)
		tok := formatToken(prefix, id, secret)
		gotID, gotSecret, err := ParseToken(prefix, tok)
		if err != nil || gotID != id || gotSecret != secret {
			t.Errorf("ParseToken(%q, %q) = %q, %q, %v; want %q, %q, nil", prefix, tok, gotID, gotSecret, err, id, secret)
		}
		if len(tok) > 64 {
			t.Errorf("len(%q) = %d, want <= 64", tok, len(tok))
		}
	}
	for _, c := range []uint32{0, 1, 61, 62, 0xFFFFFFFF} {
		got, ok := decodeCRC(encodeCRC(c))
		if !ok || got != c {
			t.Errorf("decodeCRC(encodeCRC(%d)) = %d, %v", c, got, ok)
		}
	}
	if v, ok := decodeCRC("zzzzzz"); ok {
		t.Errorf("decodeCRC(zzzzzz) = %d, true; want false (more than 32 bits)", v)
	}
}

// randomBase62 must use every digit about equally.
func TestRandomBase62(t *testing.T) {
	counts := map[rune]int{}
	const n = 62 * 1000
	for _, r := range randomBase62(n) {
		counts[r]++
	}
	if len(counts) != 62 {
		t.Fatalf("randomBase62 used %d distinct characters, want 62", len(counts))
	}
	for r, c := range counts {
		if c < 800 || c > 1200 {
			t.Errorf("randomBase62: %q appeared %d times in %d, want about 1000", r, c, n)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("smtpgate", formatToken("smtpgate", "0123456789ab", "0123456789abcdefABCDEFGHIJKLMNOP"))
	f.Add("smtpgate", "smtpgate_")
	f.Add("smtpgate", "")
	f.Add("", "_"+strings.Repeat("0", 50))
	f.Add("x", "x_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")
	f.Add("smtpgate", "smtpgate_"+strings.Repeat("é", 25))
	f.Fuzz(func(t *testing.T, prefix, s string) {
		id, secret, err := ParseToken(prefix, s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseToken(%q, %q) = %v, want an ErrInvalid", prefix, s, err)
			}
			if len(s) > 8 && strings.Contains(err.Error(), s) {
				t.Fatalf("ParseToken error %q contains the input", err)
			}
			return
		}
		if got := formatToken(prefix, id, secret); got != s {
			t.Fatalf("ParseToken(%q, %q) = %q, %q; formatted again: %q", prefix, s, id, secret, got)
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	s := openTest(b, filepath.Join(b.TempDir(), "tokens.db"), Options{FlushInterval: time.Hour})
	ctx := context.Background()
	// Other rows, so that the lookup is an index search, not a scan of one.
	for i := range 200 {
		owner := string(rune('a'+i%26)) + "@example.com"
		if _, _, err := s.Create(ctx, NewToken{Owner: mailaddr.MustParse(owner), Creator: "test", Label: "x", ExpiresAt: time.Now().Add(time.Hour)}); err != nil && !errors.Is(err, ErrTooMany) {
			b.Fatal(err)
		}
	}
	plain, _, err := s.Create(ctx, NewToken{Owner: mailaddr.MustParse("bench@example.com"), Creator: "test", Label: "x", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Check(ctx, "bench@example.com", plain, "192.0.2.1"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Check(ctx, "bench@example.com", plain, "192.0.2.1"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("malformed", func(b *testing.B) {
		bad := plain[:len(plain)-1] + "!"
		for b.Loop() {
			if _, err := s.Check(ctx, "bench@example.com", bad, "192.0.2.1"); !errors.Is(err, ErrInvalid) {
				b.Fatal(err)
			}
		}
	})
	b.Run("select only", func(b *testing.B) {
		id, _, _ := ParseToken(DefaultPrefix, plain)
		for b.Loop() {
			var owner string
			if err := s.rdb.QueryRowContext(ctx, `SELECT owner FROM app_tokens WHERE id = ?`, id).Scan(&owner); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestCrossProcess runs the admin CLI's part in a second process, as in
// production: it writes while this process checks and flushes, then revokes
// the token, which must fail here at once.
func TestCrossProcess(t *testing.T) {
	if path := os.Getenv("STORE_TEST_CLI_DB"); path != "" {
		crossProcessCLI(t, path, os.Getenv("STORE_TEST_CLI_ID"))
		return
	}
	if testing.Short() {
		t.Skip("starts a process")
	}
	path := filepath.Join(t.TempDir(), "tokens.db")
	s := openTest(t, path, Options{FlushInterval: time.Hour, MaxLivePerUser: 100})
	const owner = "a@example.com"
	plain, tok, err := s.Create(t.Context(), NewToken{Owner: mailaddr.MustParse(owner), Creator: "test", Label: "server", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrossProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "STORE_TEST_CLI_DB="+path, "STORE_TEST_CLI_ID="+tok.ID)
	out := make(chan error, 1)
	var output []byte
	go func() {
		var err error
		output, err = cmd.CombinedOutput()
		out <- err
	}()

	// Check and flush while the other process writes, until it has revoked.
	uses := 0
	for {
		_, err := s.Check(t.Context(), owner, plain, "192.0.2.1")
		if errors.Is(err, ErrRevoked) {
			break
		}
		if err != nil {
			t.Fatalf("Check while the CLI writes = %v", err)
		}
		uses++
		if err := s.Flush(t.Context()); err != nil {
			t.Fatalf("Flush while the CLI writes = %v", err)
		}
	}
	t.Logf("%d checks and flushes while the CLI process wrote", uses)
	if err := <-out; err != nil {
		t.Fatalf("CLI process: %v\n%s", err, output)
	}
	if _, err := s.Check(t.Context(), owner, plain, "192.0.2.1"); !errors.Is(err, ErrRevoked) {
		t.Errorf("Check after the CLI revoked = %v, want %v", err, ErrRevoked)
	}
	ts, err := s.ListOwned(t.Context(), mailaddr.MustParse(owner))
	if err != nil || len(ts) != 51 {
		t.Errorf("List after the CLI created 50 = %d tokens, %v; want 51", len(ts), err)
	}
	got, err := s.Get(t.Context(), tok.ID)
	if err != nil || got.UseCount != int64(uses) {
		t.Errorf("Get = UseCount %d, %v; want %d", got.UseCount, err, uses)
	}
}

func crossProcessCLI(t *testing.T, path, id string) {
	s := openTest(t, path, Options{FlushInterval: time.Hour, MaxLivePerUser: 100})
	for i := range 50 {
		_, _, err := s.Create(t.Context(), NewToken{Owner: mailaddr.MustParse("a@example.com"), Creator: "test", Label: "cli", CreatedFrom: "cli", ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatalf("CLI Create %d = %v", i, err)
		}
	}
	if err := s.RevokeAsAdmin(t.Context(), id, "test"); err != nil {
		t.Fatalf("CLI Revoke = %v", err)
	}
}

// Check's one query must be an index search, and List's by owner too.
func TestQueryPlans(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "tokens.db"), Options{})
	for _, q := range []string{
		`SELECT ` + tokenColumns + ` FROM app_tokens WHERE id = ?`,
		`SELECT ` + tokenColumns + ` FROM app_tokens WHERE owner = ? ORDER BY created_at DESC, id DESC`,
	} {
		rows, err := s.rdb.Query(`EXPLAIN QUERY PLAN `+q, "x")
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if p := strings.Join(plan, "; "); !strings.Contains(p, "USING INDEX") {
			t.Errorf("query plan of %q = %q, want an index search", q, p)
		}
	}
}
