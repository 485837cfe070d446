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

// LoadKey reads the HMAC key for Options.Key from the file at path, used as
// raw bytes. If the file does not exist, LoadKey creates it with 32 random
// bytes and mode 0600, and its directory with mode 0700 if missing. It
// refuses a key shorter than 32 bytes and, except on Windows, a file that
// grants any permission to group or others.
func LoadKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	key = make([]byte, minKeyLen)
	rand.Read(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readKey(path) // another process won the race
	}
	if err != nil {
		return nil, fmt.Errorf("create key file: %w", err)
	}
	_, err = f.Write(key)
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("write key file: %w", err)
	}
	return key, nil
}

func readKey(path string) ([]byte, error) {
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
