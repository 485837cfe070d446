package store

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// ReadKey reads the HMAC key for Options.Key from the file at path, used
// as raw bytes. It never creates one: a missing file is an error wrapping
// fs.ErrNotExist. It refuses a key shorter than 32 bytes and, except on
// Windows, a file that grants any permission to group or others.
func ReadKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("store: key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("store: key file %s has mode %#o, open to group or others: chmod 600 it", path, perm)
	}
	key, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if len(key) < minKeyLen {
		return nil, fmt.Errorf("store: key file %s holds %d bytes, need at least %d", path, len(key), minKeyLen)
	}
	return key, nil
}

// NewKey returns a new random key of 32 bytes.
func NewKey() []byte {
	key := make([]byte, minKeyLen)
	rand.Read(key)
	return key
}

// WriteKey writes key to a new file at path, mode 0600, creating the
// directory (0700) if missing. It writes a temporary file in the same
// directory, syncs it, and links it into place, so a crash leaves either
// no key file or a whole one, and an existing key file is never replaced
// (that is an error wrapping fs.ErrExist).
func WriteKey(path string, key []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".key-*.tmp")
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(key)
	if err = errors.Join(err, f.Chmod(0o600), f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	// Link, not Rename: Rename would replace a key another process wrote
	// in the meantime, and every token made with that one would die.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("store: key file %s: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("write key file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
