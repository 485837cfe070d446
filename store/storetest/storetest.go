// Package storetest is the conformance suite for store backends: every
// database driver runs the same tests, as dex's storage/conformance does.
package storetest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smtpgate/smtpgate/mailaddr"
	"github.com/smtpgate/smtpgate/store"
)

// OpenFunc returns a Store opened with opts on the database of the test t.
//
// Every test gets a database of its own, keyed by t.Name(), and calling
// OpenFunc again with the same t opens the same database again, as a
// restarted server or a second process (the admin CLI) would. OpenFunc fails
// t if the Store cannot be opened, and closes the Store in t.Cleanup; tests
// may close it earlier.
type OpenFunc func(t *testing.T, opts store.Options) *store.Store

// Run runs the suite against the backend that open opens.
func Run(t *testing.T, open OpenFunc) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"RoundTrip", testRoundTrip},
		{"Format", testFormat},
		{"CustomPrefix", testCustomPrefix},
		{"WrongSecret", testWrongSecret},
		{"WrongUsername", testWrongUsername},
		{"CaseInsensitiveUsername", testCaseInsensitiveUsername},
		{"UnknownID", testUnknownID},
		{"Garbage", testGarbage},
		{"Validation", testValidation},
		{"Senders", testSenders},
		{"Expiry", testExpiry},
		{"Revoke", testRevoke},
		{"RevokeWrongOwner", testRevokeWrongOwner},
		{"RevokeAll", testRevokeAll},
		{"PerUserLimit", testPerUserLimit},
		{"PerUserLimitConcurrent", testPerUserLimitConcurrent},
		{"ListAndGet", testListAndGet},
		{"UseTracking", testUseTracking},
		{"ConcurrentCheck", testConcurrentCheck},
		{"Reopen", testReopen},
		{"SecondStore", testSecondStore},
		{"NoSecretInOutput", testNoSecretInOutput},
		{"HTMLLabel", testHTMLLabel},
		{"KelvinUsername", testKelvinUsername},
		{"Ownership", testOwnership},
		{"Sessions", testSessions},
		{"ConsentNonce", testConsentNonce},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newEnv(t, open))
		})
	}
}

// start is the fake clock's first reading. The microseconds are there to
// catch a backend that rounds them.
func start() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC) }

const (
	alice = "alice@example.com"
	bob   = "bob@example.org"
)

// env is one test's world: a fake clock, a key and the backend.
type env struct {
	t    *testing.T
	open OpenFunc
	key  []byte

	mu  sync.Mutex
	now time.Time
}

func newEnv(t *testing.T, open OpenFunc) *env {
	key := make([]byte, 32)
	rand.Read(key)
	return &env{t: t, open: open, key: key, now: start()}
}

func (e *env) Now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

// options are the Options every test starts from. The flusher's interval is
// long so that only Flush and Close write uses.
func (e *env) options() store.Options {
	return store.Options{
		Key:           e.key,
		FlushInterval: time.Hour,
		Logger:        slog.New(slog.NewTextHandler(e.t.Output(), nil)),
		Now:           e.Now,
	}
}

// store opens a Store with the default options, changed by mod if not nil.
func (e *env) store(mod func(*store.Options)) *store.Store {
	e.t.Helper()
	opts := e.options()
	if mod != nil {
		mod(&opts)
	}
	return e.open(e.t, opts)
}

// create creates a token for owner that expires in a day.
func (e *env) create(s *store.Store, owner, label string) (string, store.Token) {
	e.t.Helper()
	n := store.NewToken{Owner: mailaddr.MustParse(owner), Creator: "test", Label: label, CreatedFrom: "192.0.2.1", ExpiresAt: e.Now().Add(24 * time.Hour)}
	plain, tok, err := s.Create(e.t.Context(), n)
	if err != nil {
		e.t.Fatalf("Create(%+v) = %v", n, err)
	}
	return plain, tok
}

// base62 is the digit alphabet of the token format.
const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// forge builds a token from its parts as the format documented in the
// store package says, independently of the package's own code.
func forge(prefix, id, secret string) string {
	s := prefix + "_" + id + secret
	c := uint64(crc32.ChecksumIEEE([]byte(s)))
	var b [6]byte
	for i := 5; i >= 0; i-- {
		b[i] = base62[c%62]
		c /= 62
	}
	return s + string(b[:])
}

func randomBase62(n int) string {
	var b strings.Builder
	for b.Len() < n {
		var x [1]byte
		rand.Read(x[:])
		if x[0] < 248 {
			b.WriteByte(base62[x[0]%62])
		}
	}
	return b.String()
}

// wantErr fails t unless errors.Is(err, want).
func wantErr(t *testing.T, call string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s = %v, want %v", call, err, want)
	}
}

func testRoundTrip(t *testing.T, e *env) {
	s := e.store(nil)
	plain, created := e.create(s, alice, "Apple Mail")
	want := store.Token{
		ID:          created.ID,
		Owner:       alice,
		Creator:     "test",
		Label:       "Apple Mail",
		Senders:     []string{alice},
		CreatedAt:   start(),
		CreatedFrom: "192.0.2.1",
		ExpiresAt:   start().Add(24 * time.Hour),
	}
	if diff := cmp.Diff(want, created); diff != "" {
		t.Errorf("Create returned token, diff (-want +got):\n%s", diff)
	}
	if !created.Live(e.Now()) {
		t.Errorf("Token.Live(%v) = false, want true", e.Now())
	}

	e.advance(time.Minute)
	got, err := s.Check(t.Context(), alice, plain, "198.51.100.7")
	if err != nil {
		t.Fatalf("Check(%q, token) = %v", alice, err)
	}
	want.UseCount = 1
	want.LastUsedAt = start().Add(time.Minute)
	want.LastUsedFrom = "198.51.100.7"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Check returned token, diff (-want +got):\n%s", diff)
	}
}

func testFormat(t *testing.T, e *env) {
	s := e.store(func(o *store.Options) { o.MaxLivePerUser = 50 })
	re := regexp.MustCompile(`^smtpgate_[0-9A-Za-z]{50}$`)
	seen := map[string]bool{}
	for range 20 {
		plain, tok := e.create(s, alice, "format")
		if len(plain) > 64 {
			t.Errorf("len(%q) = %d, want <= 64", plain, len(plain))
		}
		if !re.MatchString(plain) {
			t.Errorf("token %q does not match %v", plain, re)
		}
		id, secret, err := store.ParseToken(store.DefaultPrefix, plain)
		if err != nil {
			t.Fatalf("ParseToken(%q) = %v", plain, err)
		}
		if id != tok.ID || len(id) != 12 || len(secret) != 32 {
			t.Errorf("ParseToken(%q) = %q, %q; want id %q and a 32-character secret", plain, id, secret, tok.ID)
		}
		if f := forge(store.DefaultPrefix, id, secret); f != plain {
			t.Errorf("token %q, want the documented format %q", plain, f)
		}
		if seen[id] || seen[secret] {
			t.Errorf("id %q or secret repeated", id)
		}
		seen[id], seen[secret] = true, true
	}

	// The pattern documented for secret scanners finds a token in text.
	scanner := regexp.MustCompile(`\bsmtpgate_[0-9A-Za-z]{50}\b`)
	plain, _ := e.create(s, alice, "crc")
	text := "smtp:\n  password: " + plain + "\n  user: " + alice
	if got := scanner.FindString(text); got != plain {
		t.Errorf("%v.FindString(config with token) = %q, want %q", scanner, got, plain)
	}

	// The CRC catches every change of one character, wherever it is.
	alphabet := base62 + "_"
	for i := range len(plain) {
		for _, c := range []byte(alphabet) {
			if c == plain[i] {
				continue
			}
			bad := plain[:i] + string(c) + plain[i+1:]
			if _, _, err := store.ParseToken(store.DefaultPrefix, bad); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("ParseToken(%q) (position %d changed) = %v, want %v", bad, i, err, store.ErrInvalid)
			}
		}
	}
	bad := plain[:20] + string(plain[21]) + string(plain[20]) + plain[22:]
	if bad != plain {
		_, err := s.Check(t.Context(), alice, bad, "192.0.2.9")
		wantErr(t, "Check(transposed token)", err, store.ErrInvalid)
	}
}

func testCustomPrefix(t *testing.T, e *env) {
	s := e.store(func(o *store.Options) { o.Prefix = "acme2mail0123" }) // 13, the longest
	plain, _ := e.create(s, alice, "prefix")
	if len(plain) != 64 || !strings.HasPrefix(plain, "acme2mail0123_") {
		t.Errorf("token %q, want 64 characters starting with %q", plain, "acme2mail0123_")
	}
	if _, err := s.Check(t.Context(), alice, plain, "192.0.2.1"); err != nil {
		t.Errorf("Check(token with custom prefix) = %v", err)
	}
	if _, _, err := store.ParseToken(store.DefaultPrefix, plain); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("ParseToken(%q, token with another prefix) = %v, want %v", store.DefaultPrefix, err, store.ErrInvalid)
	}
}

func testWrongSecret(t *testing.T, e *env) {
	s := e.store(nil)
	plain, tok := e.create(s, alice, "wrong secret")
	other := randomBase62(32)
	guess := forge(store.DefaultPrefix, tok.ID, other)
	_, err := s.Check(t.Context(), alice, guess, "192.0.2.9")
	wantErr(t, "Check(right id, wrong secret)", err, store.ErrInvalid)
	_, secret, _ := store.ParseToken(store.DefaultPrefix, plain)
	if err != nil && (strings.Contains(err.Error(), other) || strings.Contains(err.Error(), secret)) {
		t.Errorf("Check error %q contains a secret", err)
	}
	got, err := s.Get(t.Context(), tok.ID)
	if err != nil || got.UseCount != 0 {
		t.Errorf("Get after failed Check = UseCount %d, %v; want 0, nil", got.UseCount, err)
	}
}

func testWrongUsername(t *testing.T, e *env) {
	s := e.store(nil)
	plain, _ := e.create(s, alice, "wrong user")
	e.create(s, bob, "bob's")
	for _, user := range []string{bob, "", "alice", "alice@example.org", " " + alice} {
		_, err := s.Check(t.Context(), user, plain, "192.0.2.9")
		wantErr(t, fmt.Sprintf("Check(%q, alice's token)", user), err, store.ErrInvalid)
	}
}

func testCaseInsensitiveUsername(t *testing.T, e *env) {
	s := e.store(nil)
	plain, tok := e.create(s, "Alice@Example.COM", "case")
	if tok.Owner != alice {
		t.Errorf("Create(owner %q).Owner = %q, want %q", "Alice@Example.COM", tok.Owner, alice)
	}
	for _, user := range []string{alice, "ALICE@EXAMPLE.COM", "Alice@example.Com"} {
		if _, err := s.Check(t.Context(), user, plain, "192.0.2.1"); err != nil {
			t.Errorf("Check(%q, token) = %v", user, err)
		}
	}
}

// The Kelvin sign (U+212A) folds to "k" under Unicode rules: the username
// of a token must match its owner as an ASCII address, not a folded one.
func testKelvinUsername(t *testing.T, e *env) {
	s := e.store(nil)
	plain, _ := e.create(s, "kevin@example.com", "kelvin")
	_, err := s.Check(t.Context(), "\u212Aevin@example.com", plain, "192.0.2.1")
	wantErr(t, "Check(Kelvin-sign username)", err, store.ErrInvalid)
	if _, err := s.Check(t.Context(), "KEVIN@example.com", plain, "192.0.2.1"); err != nil {
		t.Errorf("Check(ASCII upper case) = %v", err)
	}
}

// The creator and who revoked are kept; an owner cannot revoke another's
// token, and there is no "empty owner means admin" any more.
func testOwnership(t *testing.T, e *env) {
	s := e.store(nil)
	_, tok := e.create(s, alice, "mine")
	if tok.Creator != "test" {
		t.Errorf("Creator = %q, want test", tok.Creator)
	}
	wantErr(t, "RevokeOwned(bob, alice's token)", s.RevokeOwned(t.Context(), mailaddr.MustParse(bob), tok.ID, "iss#bob"), store.ErrNotFound)
	wantErr(t, "RevokeOwned(zero owner)", s.RevokeOwned(t.Context(), mailaddr.Address{}, tok.ID, "x"), store.ErrValidation)
	if _, err := s.ListOwned(t.Context(), mailaddr.Address{}); !errors.Is(err, store.ErrValidation) {
		t.Errorf("ListOwned(zero owner) = %v, want ErrValidation", err)
	}
	if err := s.RevokeOwned(t.Context(), mailaddr.MustParse(alice), tok.ID, "iss#alice"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(t.Context(), tok.ID)
	if err != nil || got.RevokedBy != "owner:iss#alice" {
		t.Errorf("RevokedBy = %q, %v; want owner:iss#alice", got.RevokedBy, err)
	}
	_, tok2 := e.create(s, bob, "theirs")
	if err := s.RevokeAsAdmin(t.Context(), tok2.ID, "cli:root"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(t.Context(), tok2.ID); got.RevokedBy != "admin:cli:root" {
		t.Errorf("RevokedBy = %q, want admin:cli:root", got.RevokedBy)
	}
}

func testSessions(t *testing.T, e *env) {
	s := e.store(nil)
	ctx := t.Context()
	mk := func(sub, box string) store.Session {
		t.Helper()
		sess, err := s.CreateSession(ctx, store.Session{Subject: sub, Mailbox: mailaddr.MustParse(box), Data: []byte(`{"x":1}`), ExpiresAt: e.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return sess
	}
	a1, a2, b1 := mk("iss#alice", alice), mk("iss#alice", alice), mk("iss#bob", bob)
	if a1.ID == a2.ID || len(a1.ID) < 20 {
		t.Fatalf("session IDs %q, %q: want distinct random IDs", a1.ID, a2.ID)
	}
	got, err := s.Session(ctx, a1.ID)
	if err != nil || got.Subject != "iss#alice" || string(got.Data) != `{"x":1}` || got.Mailbox.String() != alice {
		t.Errorf("Session(a1) = %+v, %v", got, err)
	}
	if _, err := s.CreateSession(ctx, store.Session{Subject: " ", Mailbox: mailaddr.MustParse(alice), ExpiresAt: e.Now().Add(time.Hour)}); !errors.Is(err, store.ErrValidation) {
		t.Errorf("CreateSession(blank subject) = %v, want ErrValidation", err)
	}
	if err := s.DeleteSession(ctx, a1.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Session(after DeleteSession)", errOf(s.Session(ctx, a1.ID)), store.ErrNoSession)
	if _, err := s.Session(ctx, a2.ID); err != nil {
		t.Errorf("the other tab's session ended with the first: %v", err)
	}
	if n, err := s.DeleteSessionsOf(ctx, "iss#alice"); n != 1 || err != nil {
		t.Errorf("DeleteSessionsOf = %d, %v; want 1", n, err)
	}
	wantErr(t, "Session(after sign out everywhere)", errOf(s.Session(ctx, a2.ID)), store.ErrNoSession)
	if _, err := s.Session(ctx, b1.ID); err != nil {
		t.Errorf("bob's session ended with alice's: %v", err)
	}
	if n, err := s.DeleteSessionsOfMailbox(ctx, mailaddr.MustParse(bob)); n != 1 || err != nil {
		t.Errorf("DeleteSessionsOfMailbox = %d, %v; want 1", n, err)
	}
	c := mk("iss#carol", "carol@example.com")
	e.advance(time.Hour)
	wantErr(t, "Session(expired)", errOf(s.Session(ctx, c.ID)), store.ErrNoSession)
	wantErr(t, "Session(unknown)", errOf(s.Session(ctx, "nope")), store.ErrNoSession)
}

func errOf[T any](_ T, err error) error { return err }

func testConsentNonce(t *testing.T, e *env) {
	s := e.store(nil)
	ctx := t.Context()
	sess, err := s.CreateSession(ctx, store.Session{Subject: "iss#alice", Mailbox: mailaddr.MustParse(alice), ExpiresAt: e.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.CreateSession(ctx, store.Session{Subject: "iss#alice", Mailbox: mailaddr.MustParse(alice), ExpiresAt: e.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	n1, err := s.IssueNonce(ctx, sess.ID, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "UseNonce(another session)", s.UseNonce(ctx, other.ID, n1), store.ErrNoSession)
	// Concurrent replays: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Go(func() {
			if s.UseNonce(ctx, sess.ID, n1) == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d of 8 concurrent uses of one nonce succeeded, want 1", wins)
	}
	n2, _ := s.IssueNonce(ctx, sess.ID, 10*time.Minute)
	e.advance(11 * time.Minute)
	wantErr(t, "UseNonce(expired)", s.UseNonce(ctx, sess.ID, n2), store.ErrNoSession)
	n3, _ := s.IssueNonce(ctx, sess.ID, 10*time.Minute)
	if err := s.DeleteSession(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "UseNonce(after sign-out)", s.UseNonce(ctx, sess.ID, n3), store.ErrNoSession)
}

func testUnknownID(t *testing.T, e *env) {
	s := e.store(nil)
	e.create(s, alice, "exists")
	guess := forge(store.DefaultPrefix, randomBase62(12), randomBase62(32))
	_, err := s.Check(t.Context(), alice, guess, "192.0.2.9")
	wantErr(t, "Check(well-formed token with unknown id)", err, store.ErrInvalid)
	_, err = s.Get(t.Context(), "000000000000")
	wantErr(t, "Get(unknown id)", err, store.ErrNotFound)
}

func testGarbage(t *testing.T, e *env) {
	s := e.store(nil)
	plain, _ := e.create(s, alice, "garbage")
	for _, pw := range []string{
		"",
		"hunter2",
		"smtpgate_",
		plain[:len(plain)-1],
		plain + "0",
		plain + " ",
		" " + plain,
		strings.ToUpper(plain),
		strings.Replace(plain, "_", "-", 1),
		"other_" + plain[len("smtpgate_"):],
		strings.Repeat("a", 59),
		strings.Repeat("_", 59),
		"smtpgate_" + strings.Repeat("é", 25),
		"smtpgate_" + strings.Repeat("\x00", 50),
		strings.Repeat("x", 100000),
	} {
		_, err := s.Check(t.Context(), alice, pw, "192.0.2.9")
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Check(%.70q) = %v, want %v", pw, err, store.ErrInvalid)
		}
	}
}

func testValidation(t *testing.T, e *env) {
	s := e.store(nil)
	ok := store.NewToken{Owner: mailaddr.MustParse(alice), Creator: "test", Label: "ok", CreatedFrom: "cli", ExpiresAt: e.Now().Add(time.Hour)}
	tests := []struct {
		name string
		mod  func(*store.NewToken)
	}{
		// An empty owner is not "the administrator": the store refuses it.
		{"empty owner", func(n *store.NewToken) { n.Owner = mailaddr.Address{} }},
		{"empty creator", func(n *store.NewToken) { n.Creator = " " }},
		{"empty label", func(n *store.NewToken) { n.Label = "   " }},
		{"long label", func(n *store.NewToken) { n.Label = strings.Repeat("x", 101) }},
		{"label with newline", func(n *store.NewToken) { n.Label = "a\nb" }},
		{"label with NUL", func(n *store.NewToken) { n.Label = "a\x00b" }},
		{"label not UTF-8", func(n *store.NewToken) { n.Label = "a\xffb" }},
		{"empty sender", func(n *store.NewToken) { n.Senders = []mailaddr.Address{mailaddr.MustParse(alice), {}} }},
		// Unicode Cc and Cf: bidi overrides and invisible characters make a
		// label read differently than it is.
		{"label with RLO", func(n *store.NewToken) { n.Label = "iPhone \u202Egnp.exe" }},
		{"label with LRI", func(n *store.NewToken) { n.Label = "a\u2066b" }},
		{"label with zero-width joiner", func(n *store.NewToken) { n.Label = "a\u200Db" }},
		{"label with soft hyphen", func(n *store.NewToken) { n.Label = "a\u00ADb" }},
		{"label with C1 control", func(n *store.NewToken) { n.Label = "a\u0085b" }},
		{"no expiry", func(n *store.NewToken) { n.ExpiresAt = time.Time{} }},
		{"expiry now", func(n *store.NewToken) { n.ExpiresAt = e.Now() }},
		{"expiry past", func(n *store.NewToken) { n.ExpiresAt = e.Now().Add(-time.Hour) }},
	}
	for _, tc := range tests {
		n := ok
		tc.mod(&n)
		if _, _, err := s.Create(t.Context(), n); !errors.Is(err, store.ErrValidation) {
			t.Errorf("%s: Create(%+v) = %v, want %v", tc.name, n, err, store.ErrValidation)
		}
	}
	n := ok
	n.Label = "  " + strings.Repeat("ü", 100) + "\t"
	_, tok, err := s.Create(t.Context(), n)
	if err != nil || tok.Label != strings.Repeat("ü", 100) {
		t.Errorf("Create(label of 100 runes with spaces) = %q, %v; want the label trimmed", tok.Label, err)
	}
	ts, err := s.ListAll(t.Context())
	if err != nil || len(ts) != 1 {
		t.Errorf("List after invalid Creates = %d tokens, %v; want 1", len(ts), err)
	}
}

func testSenders(t *testing.T, e *env) {
	s := e.store(nil)
	n := store.NewToken{
		Owner:     mailaddr.MustParse(alice),
		Creator:   "test",
		Label:     "aliases",
		Senders:   []mailaddr.Address{mailaddr.MustParse("Sales@Example.com"), mailaddr.MustParse(alice), mailaddr.MustParse("sales@example.com")},
		ExpiresAt: e.Now().Add(time.Hour),
	}
	_, tok, err := s.Create(t.Context(), n)
	if err != nil {
		t.Fatalf("Create(%+v) = %v", n, err)
	}
	want := []string{"sales@example.com", alice}
	if diff := cmp.Diff(want, tok.Senders); diff != "" {
		t.Errorf("Create(%+v).Senders, diff (-want +got):\n%s", n, diff)
	}
	got, err := s.Get(t.Context(), tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got.Senders); diff != "" {
		t.Errorf("Get(%q).Senders, diff (-want +got):\n%s", tok.ID, diff)
	}
}

func testExpiry(t *testing.T, e *env) {
	s := e.store(nil)
	n := store.NewToken{Owner: mailaddr.MustParse(alice), Creator: "test", Label: "short", CreatedFrom: "cli", ExpiresAt: e.Now().Add(time.Hour)}
	plain, tok, err := s.Create(t.Context(), n)
	if err != nil {
		t.Fatal(err)
	}
	e.advance(time.Hour - time.Second)
	if _, err := s.Check(t.Context(), alice, plain, "192.0.2.1"); err != nil {
		t.Errorf("Check a second before expiry = %v", err)
	}
	e.advance(time.Second)
	_, err = s.Check(t.Context(), alice, plain, "192.0.2.1")
	wantErr(t, "Check at expiry", err, store.ErrExpired)
	if tok.Live(e.Now()) {
		t.Errorf("Token.Live(expiry) = true, want false")
	}
	// The secret is checked before the expiry is told.
	wrong := forge(store.DefaultPrefix, tok.ID, randomBase62(32))
	_, err = s.Check(t.Context(), alice, wrong, "192.0.2.1")
	wantErr(t, "Check(expired token, wrong secret)", err, store.ErrInvalid)
	_, err = s.Check(t.Context(), bob, plain, "192.0.2.1")
	wantErr(t, "Check(expired token, wrong user)", err, store.ErrInvalid)
}

func testRevoke(t *testing.T, e *env) {
	s := e.store(nil)
	plain, tok := e.create(s, alice, "to revoke")
	keep, _ := e.create(s, alice, "to keep")
	if _, err := s.Check(t.Context(), alice, plain, "192.0.2.1"); err != nil {
		t.Fatalf("Check before Revoke = %v", err)
	}
	e.advance(time.Minute)
	if err := s.RevokeOwned(t.Context(), mailaddr.MustParse("Alice@Example.com"), tok.ID, "test"); err != nil {
		t.Fatalf("Revoke(alice, %q) = %v", tok.ID, err)
	}
	_, err := s.Check(t.Context(), alice, plain, "192.0.2.1")
	wantErr(t, "Check after Revoke", err, store.ErrRevoked)
	if _, err := s.Check(t.Context(), alice, keep, "192.0.2.1"); err != nil {
		t.Errorf("Check(other token) after Revoke = %v", err)
	}

	e.advance(time.Minute)
	if err := s.RevokeOwned(t.Context(), mailaddr.MustParse(alice), tok.ID, "test"); err != nil {
		t.Errorf("Revoke again = %v, want nil", err)
	}
	got, err := s.Get(t.Context(), tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := start().Add(time.Minute); !got.RevokedAt.Equal(want) {
		t.Errorf("RevokedAt = %v, want %v (the first revocation)", got.RevokedAt, want)
	}
	if got.Live(e.Now()) {
		t.Errorf("revoked Token.Live = true, want false")
	}
}

func testRevokeWrongOwner(t *testing.T, e *env) {
	s := e.store(nil)
	plain, tok := e.create(s, alice, "alice's")
	err := s.RevokeOwned(t.Context(), mailaddr.MustParse(bob), tok.ID, "test")
	wantErr(t, "Revoke(bob, alice's token)", err, store.ErrNotFound)
	if _, err := s.Check(t.Context(), alice, plain, "192.0.2.1"); err != nil {
		t.Errorf("Check after another user's Revoke = %v", err)
	}
	err = s.RevokeOwned(t.Context(), mailaddr.MustParse(alice), "000000000000", "test")
	wantErr(t, "Revoke(alice, unknown id)", err, store.ErrNotFound)
	err = s.RevokeAsAdmin(t.Context(), "000000000000", "test")
	wantErr(t, "Revoke(admin, unknown id)", err, store.ErrNotFound)
	if err := s.RevokeAsAdmin(t.Context(), tok.ID, "test"); err != nil {
		t.Errorf("Revoke(admin, %q) = %v", tok.ID, err)
	}
	_, err = s.Check(t.Context(), alice, plain, "192.0.2.1")
	wantErr(t, "Check after admin Revoke", err, store.ErrRevoked)
}

func testRevokeAll(t *testing.T, e *env) {
	s := e.store(nil)
	var plains []string
	for i := range 3 {
		p, _ := e.create(s, alice, fmt.Sprint("live ", i))
		plains = append(plains, p)
	}
	_, revoked := e.create(s, alice, "revoked")
	if err := s.RevokeOwned(t.Context(), mailaddr.MustParse(alice), revoked.ID, "test"); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.Create(t.Context(), store.NewToken{Owner: mailaddr.MustParse(alice), Creator: "test", Label: "expiring", ExpiresAt: e.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	bobs, _ := e.create(s, bob, "bob's")
	e.advance(2 * time.Hour)

	n, err := s.RevokeAllOwned(t.Context(), mailaddr.MustParse("ALICE@example.com"), "test", false)
	if n != 3 || err != nil {
		t.Errorf("RevokeAll(alice) = %d, %v; want 3, nil", n, err)
	}
	for _, p := range plains {
		_, err := s.Check(t.Context(), alice, p, "192.0.2.1")
		wantErr(t, "Check after RevokeAll", err, store.ErrRevoked)
	}
	if _, err := s.Check(t.Context(), bob, bobs, "192.0.2.1"); err != nil {
		t.Errorf("Check(bob's token) after RevokeAll(alice) = %v", err)
	}
	if n, err := s.RevokeAllOwned(t.Context(), mailaddr.MustParse(alice), "test", false); n != 0 || err != nil {
		t.Errorf("RevokeAll(alice) again = %d, %v; want 0, nil", n, err)
	}
	if n, err := s.RevokeAllOwned(t.Context(), mailaddr.MustParse("carol@example.com"), "test", false); n != 0 || err != nil {
		t.Errorf("RevokeAll(carol) = %d, %v; want 0, nil", n, err)
	}
	if n, err := s.RevokeAllOwned(t.Context(), mailaddr.Address{}, "test", true); err == nil {
		t.Errorf(`RevokeAll("") = %d, nil; want an error`, n)
	}
}

func testPerUserLimit(t *testing.T, e *env) {
	s := e.store(func(o *store.Options) { o.MaxLivePerUser = 3 })
	var toks []store.Token
	for i := range 3 {
		_, tok := e.create(s, alice, fmt.Sprint("token ", i))
		toks = append(toks, tok)
	}
	n := store.NewToken{Owner: mailaddr.MustParse(alice), Creator: "test", Label: "one too many", ExpiresAt: e.Now().Add(time.Hour)}
	_, _, err := s.Create(t.Context(), n)
	wantErr(t, "Create(4th live token, limit 3)", err, store.ErrTooMany)
	e.create(s, bob, "bob is not limited by alice")

	if err := s.RevokeOwned(t.Context(), mailaddr.MustParse(alice), toks[0].ID, "test"); err != nil {
		t.Fatal(err)
	}
	e.create(s, alice, "after revoke")
	_, _, err = s.Create(t.Context(), n)
	wantErr(t, "Create(4th live token after one revoked)", err, store.ErrTooMany)

	// Expired tokens do not count either.
	e.advance(25 * time.Hour)
	for i := range 3 {
		e.create(s, alice, fmt.Sprint("after expiry ", i))
	}
}

// Concurrent Creates must not exceed the limit between count and insert.
func testPerUserLimitConcurrent(t *testing.T, e *env) {
	const limit, tries = 5, 20
	s := e.store(func(o *store.Options) { o.MaxLivePerUser = limit })
	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		created, many  int
		unexpectedErrs []error
	)
	for i := range tries {
		wg.Go(func() {
			n := store.NewToken{Owner: mailaddr.MustParse(alice), Creator: "test", Label: fmt.Sprint("racer ", i), ExpiresAt: e.Now().Add(time.Hour)}
			_, _, err := s.Create(t.Context(), n)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, store.ErrTooMany):
				many++
			default:
				unexpectedErrs = append(unexpectedErrs, err)
			}
		})
	}
	wg.Wait()
	if created != limit || many != tries-limit || len(unexpectedErrs) > 0 {
		t.Errorf("%d concurrent Creates with limit %d: %d created, %d ErrTooMany, errors %v; want %d, %d, none",
			tries, limit, created, many, unexpectedErrs, limit, tries-limit)
	}
}

func testListAndGet(t *testing.T, e *env) {
	s := e.store(nil)
	var want []store.Token
	for i, owner := range []string{alice, bob, alice} {
		_, tok := e.create(s, owner, fmt.Sprint("token ", i))
		want = append([]store.Token{tok}, want...) // newest first
		e.advance(time.Second)
	}
	all, err := s.ListAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, all); diff != "" {
		t.Errorf("List(all), diff (-want +got):\n%s", diff)
	}
	alices, err := s.ListOwned(t.Context(), mailaddr.MustParse("Alice@Example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.Token{want[0], want[2]}, alices); diff != "" {
		t.Errorf("List(alice), diff (-want +got):\n%s", diff)
	}
	none, err := s.ListOwned(t.Context(), mailaddr.MustParse("carol@example.com"))
	if err != nil || len(none) != 0 {
		t.Errorf("List(carol) = %v, %v; want none", none, err)
	}
	got, err := s.Get(t.Context(), want[1].ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want[1], got); diff != "" {
		t.Errorf("Get(%q), diff (-want +got):\n%s", want[1].ID, diff)
	}
}

func testUseTracking(t *testing.T, e *env) {
	s := e.store(nil)
	plain, tok := e.create(s, alice, "used")
	e.advance(time.Minute)
	for _, remote := range []string{"192.0.2.1", "[2001:db8::1]:4711"} {
		e.advance(time.Second)
		if _, err := s.Check(t.Context(), alice, plain, remote); err != nil {
			t.Fatal(err)
		}
	}
	wantAt := start().Add(time.Minute + 2*time.Second)
	check := func(when string) {
		t.Helper()
		got, err := s.Get(t.Context(), tok.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.UseCount != 2 || !got.LastUsedAt.Equal(wantAt) || got.LastUsedFrom != "[2001:db8::1]:4711" {
			t.Errorf("%s: Get = UseCount %d, LastUsedAt %v, LastUsedFrom %q; want 2, %v, %q",
				when, got.UseCount, got.LastUsedAt, got.LastUsedFrom, wantAt, "[2001:db8::1]:4711")
		}
		ts, err := s.ListOwned(t.Context(), mailaddr.MustParse(alice))
		if err != nil || len(ts) != 1 {
			t.Fatalf("List(alice) = %d tokens, %v", len(ts), err)
		}
		if diff := cmp.Diff(got, ts[0]); diff != "" {
			t.Errorf("%s: List and Get differ (-get +list):\n%s", when, diff)
		}
	}
	check("before Flush")
	if err := s.Flush(t.Context()); err != nil {
		t.Fatalf("Flush = %v", err)
	}
	check("after Flush")
	if err := s.Flush(t.Context()); err != nil {
		t.Fatalf("Flush with nothing pending = %v", err)
	}
	check("after second Flush")

	// A use of a token revoked before the flush is recorded all the same.
	e.advance(time.Second)
	if _, err := s.Check(t.Context(), alice, plain, "192.0.2.3"); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeOwned(t.Context(), mailaddr.MustParse(alice), tok.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(t.Context(), tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.UseCount != 3 || got.LastUsedFrom != "192.0.2.3" || got.RevokedAt.IsZero() {
		t.Errorf("Get after use, revoke, flush = UseCount %d, LastUsedFrom %q, RevokedAt %v; want 3, 192.0.2.3, set",
			got.UseCount, got.LastUsedFrom, got.RevokedAt)
	}
}

func testConcurrentCheck(t *testing.T, e *env) {
	const n = 50
	s := e.store(nil)
	plain, tok := e.create(s, alice, "busy printer")
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := s.Check(t.Context(), alice, plain, fmt.Sprintf("192.0.2.%d", i))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Check = %v", err)
		}
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(t.Context(), tok.ID)
	if err != nil || got.UseCount != n {
		t.Errorf("Get after %d concurrent Checks and Flush = UseCount %d, %v; want %d", n, got.UseCount, err, n)
	}
}

func testReopen(t *testing.T, e *env) {
	s := e.store(nil)
	plain, tok := e.create(s, alice, "survives restarts")
	e.advance(time.Minute)
	if _, err := s.Check(t.Context(), alice, plain, "192.0.2.5"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}

	s = e.store(nil)
	got, err := s.Get(t.Context(), tok.ID)
	if err != nil {
		t.Fatalf("Get after reopen = %v", err)
	}
	want := tok
	want.UseCount, want.LastUsedAt, want.LastUsedFrom = 1, start().Add(time.Minute), "192.0.2.5"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Get after Close and reopen, diff (-want +got):\n%s", diff)
	}
	if _, err := s.Check(t.Context(), alice, plain, "192.0.2.5"); err != nil {
		t.Errorf("Check after reopen = %v", err)
	}
}

// The admin CLI opens the database while the server runs.
func testSecondStore(t *testing.T, e *env) {
	server := e.store(nil)
	cli := e.store(nil)
	plain, tok := e.create(server, alice, "server's")
	if _, err := server.Check(t.Context(), alice, plain, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	ts, err := cli.ListOwned(t.Context(), mailaddr.MustParse(alice))
	if err != nil || len(ts) != 1 || ts[0].ID != tok.ID {
		t.Fatalf("CLI List(alice) = %v, %v; want the server's token", ts, err)
	}
	if err := cli.RevokeAsAdmin(t.Context(), tok.ID, "test"); err != nil {
		t.Fatalf("CLI Revoke = %v", err)
	}
	_, err = server.Check(t.Context(), alice, plain, "192.0.2.1")
	wantErr(t, "server Check right after CLI Revoke", err, store.ErrRevoked)

	cliPlain, _ := e.create(cli, bob, "cli's")
	if _, err := server.Check(t.Context(), bob, cliPlain, "192.0.2.1"); err != nil {
		t.Errorf("server Check(token created by CLI) = %v", err)
	}
	if err := server.Flush(t.Context()); err != nil {
		t.Errorf("server Flush while CLI is open = %v", err)
	}
	if err := cli.Close(); err != nil {
		t.Errorf("CLI Close = %v", err)
	}
	got, err := server.Get(t.Context(), tok.ID)
	if err != nil || got.UseCount != 1 {
		t.Errorf("server Get = UseCount %d, %v; want 1", got.UseCount, err)
	}
}

func testNoSecretInOutput(t *testing.T, e *env) {
	s := e.store(nil)
	plain, created := e.create(s, alice, "secret")
	_, secret, err := store.ParseToken(store.DefaultPrefix, plain)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, e.key)
	m.Write([]byte(secret))
	sum := m.Sum(nil)
	if _, err := s.Check(t.Context(), alice, plain, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	_, wrongErr := s.Check(t.Context(), alice, plain[:20]+"x"+plain[21:], "192.0.2.1")
	got, err := s.Get(t.Context(), created.ID)
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.ListAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprintf("%+v %#v %+v %s %v", created, got, list, j, wrongErr)
	for _, bad := range []string{secret, hex.EncodeToString(sum), strings.ToUpper(hex.EncodeToString(sum)), string(sum)} {
		if strings.Contains(out, bad) {
			t.Errorf("Token output %s contains the secret or its hash", out)
		}
	}
}

func testHTMLLabel(t *testing.T, e *env) {
	s := e.store(nil)
	label := `<script>alert("x")</script> & 'Outlook' <b>`
	_, tok := e.create(s, alice, label)
	got, err := s.Get(t.Context(), tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.ListOwned(t.Context(), mailaddr.MustParse(alice))
	if err != nil || len(list) != 1 {
		t.Fatalf("List(alice) = %v, %v", list, err)
	}
	for _, l := range []string{tok.Label, got.Label, list[0].Label} {
		if l != label {
			t.Errorf("label = %q, want %q verbatim", l, label)
		}
	}
}
