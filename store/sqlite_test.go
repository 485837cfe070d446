package store_test

import (
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/smtpgate/smtpgate/store"
	"github.com/smtpgate/smtpgate/store/storetest"
)

// TestSQLite runs the conformance suite on SQLite files in a temporary
// directory, one file per test.
func TestSQLite(t *testing.T) {
	dir := t.TempDir()
	storetest.Run(t, func(t *testing.T, opts store.Options) *store.Store {
		t.Helper()
		name := strings.Map(func(r rune) rune {
			if unicode.IsLetter(r) || unicode.IsDigit(r) {
				return r
			}
			return '_'
		}, t.Name())
		path := filepath.Join(dir, name, "tokens.db")
		s, err := store.Open(t.Context(), "sqlite", path, opts)
		if err != nil {
			t.Fatalf("Open(sqlite, %q) = %v", path, err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close = %v", err)
			}
		})
		return s
	})
}
