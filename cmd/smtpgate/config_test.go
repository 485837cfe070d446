package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestExampleConfigs loads every file in configs/, so the examples cannot
// drift from the code. Files they name (certificates, secrets) do not exist
// here; every other problem fails the test.
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs found (%v)", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := loadConfig(f)
			for _, e := range leafErrors(err) {
				if !errors.Is(e, fs.ErrNotExist) {
					t.Errorf("loadConfig(%s): %v", f, e)
				}
			}
		})
	}
}

func leafErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leafErrors(e)...)
		}
		return out
	}
	if u := errors.Unwrap(err); u != nil {
		if _, ok := u.(interface{ Unwrap() []error }); ok {
			return leafErrors(u)
		}
	}
	return []error{err}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every one must appear in the error
	}{
		{"empty", "", []string{"empty file"}},
		{"unknown key", "smtp:\n  hostnme: x\n", []string{"field hostnme not found"}},
		{"everything wrong at once", `
smtp:
  submission: "nope"
  max_recipients: -1
oidc:
  issuers:
    - issuer: "not a url"
upstream:
  tls: sometimes
log:
  level: loud
`, []string{
			"smtp.hostname is required",
			`smtp.submission "nope"`,
			"cert_file and key_file are required",
			"limits must not be negative",
			"oidc",
			"upstream.addr is required",
			`upstream.tls "sometimes"`,
			`log.level "loud"`,
		}},
		{"both listeners off", "smtp:\n  hostname: h\n  submission: \"\"\n  submissions: \"\"\n", []string{"both listeners are disabled"}},
		{"password without user", "upstream:\n  addr: a:25\n  password_file: /x\n", []string{"go together"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(strings.NewReader(tc.yaml))
			if err == nil {
				t.Fatalf("parseConfig(%q) = nil error, want %q", tc.yaml, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("parseConfig error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestCheckConfigCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("smtp: {}\n"), 0o600)
	var out, errOut strings.Builder
	err := run(t.Context(), []string{"check-config", "-config", bad}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "smtp.hostname is required") || !strings.Contains(err.Error(), "upstream.addr is required") {
		t.Errorf("check-config on a bad file = %v, want every problem listed", err)
	}
	t.Setenv("SMTPGATE_CONFIG", bad)
	if err := run(t.Context(), []string{"check-config"}, &out, &errOut); err == nil {
		t.Error("check-config via SMTPGATE_CONFIG accepted a bad file")
	}
	if err := run(t.Context(), []string{"frobnicate"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("unknown command = %v", err)
	}
}

// TestDevYAML keeps configs/dev.yaml equal to what "smtpgate dev
// -print-config" prints.
func TestDevYAML(t *testing.T) {
	want, err := devConfig("smtpgate-dev", defaultDevAddrs())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../configs/dev.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("configs/dev.yaml differs from smtpgate dev -print-config; run: go run ./cmd/smtpgate dev -print-config > configs/dev.yaml")
	}
}

// TestREADMEConfigReference checks that the README's configuration
// reference names every key the code reads, and no key it does not.
func TestREADMEConfigReference(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	keys := yamlKeys(reflect.TypeFor[Config](), "")
	documented := regexp.MustCompile("(?m)^\\| `([a-z_.\\[\\]]+)`").FindAllStringSubmatch(string(readme), -1)
	doc := make(map[string]bool)
	for _, m := range documented {
		doc[m[1]] = true
	}
	for _, k := range keys {
		if !doc[k] {
			t.Errorf("README's configuration reference lacks `%s`", k)
		}
		delete(doc, k)
	}
	for k := range doc {
		t.Errorf("README documents `%s`, which the code does not read", k)
	}
}

func yamlKeys(typ reflect.Type, prefix string) []string {
	var out []string
	for f := range typ.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		key := prefix + tag
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Duration]():
			out = append(out, yamlKeys(ft, key+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, yamlKeys(ft.Elem(), key+"[].")...)
		default:
			out = append(out, key)
		}
	}
	return out
}
