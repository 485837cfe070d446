package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/mailaddr"
	"github.com/smtpgate/smtpgate/store"
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
		{"unknown key", "smtp:\n  hostnme: x\n", []string{"line 2: unknown key smtp.hostnme"}},
		{"unknown nested keys", "oidc:\n  issuers:\n    - issuer: https://x\n      audience: [a]\nweb:\n  outbox_dir: /tmp\n", []string{"unknown key oidc.issuers[0].audience", "unknown key web.outbox_dir"}},
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

// TestCheckConfigListsEveryProblem: an unknown key does not hide the
// other problems, and check-config and serve refuse the same config with
// the same list.
func TestCheckConfigListsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "token.key")
	os.WriteFile(key, make([]byte, 32), 0o600)
	os.Chmod(key, 0o644) // readable by others, despite the umask
	path := filepath.Join(dir, "smtpgate.yaml")
	os.WriteFile(path, []byte(`smtp:
  hostname: mail.example.com
  submission: 127.0.0.1:0
  submissions: ""
  allow_insecure_auth: true
  colour: blue
oidc:
  issuers: [{issuer: "http://127.0.0.1:1", audiences: [smtp-gateway]}]
upstream: {addr: "127.0.0.1:25", tls: none}
store: {dsn: smtpgate.db}
tokens: {key_file: token.key, prefix: "Bad-Prefix", default_ttl: -24h}
web: {listen: "127.0.0.1:0", base_url: "mail-auth.example.com", client_id: web}
`), 0o600)
	want := []string{
		"line 6: unknown key smtp.colour",
		`token prefix "Bad-Prefix" may contain only a-z and 0-9`,
		"default_ttl and max_ttl must not be negative",
		`base_url "mail-auth.example.com" must be an absolute http(s) URL`,
		"has mode 0644, open to group or others",
	}
	var out, errOut strings.Builder
	checkErr := run(t.Context(), []string{"check-config", "-config", path}, &out, &errOut)
	serveErr := run(t.Context(), []string{"serve", "-config", path}, &out, &errOut)
	for name, err := range map[string]error{"check-config": checkErr, "serve": serveErr} {
		if err == nil {
			t.Fatalf("%s accepted the config", name)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s error lacks %q:\n%v", name, w, err)
			}
		}
	}
	if checkErr.Error() != serveErr.Error() {
		t.Errorf("check-config and serve disagree:\n%v\n---\n%v", checkErr, serveErr)
	}
	if _, err := os.Stat(filepath.Join(dir, "smtpgate.db")); !os.IsNotExist(err) {
		t.Error("a refused config created the database")
	}
}

// TestRelativePaths: paths in a config are relative to its directory, so
// the CLI run from anywhere opens the server's store; the CLI never
// creates a store or a key, names the store it opened, and a revoke -all
// that finds nothing fails.
func TestRelativePaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "smtpgate.yaml")
	os.WriteFile(path, []byte(`smtp: {hostname: h, submission: "127.0.0.1:0", submissions: "", allow_insecure_auth: true}
oidc: {issuers: [{issuer: "http://127.0.0.1:1", audiences: [a]}]}
upstream: {addr: "127.0.0.1:25", tls: none}
store: {dsn: data/smtpgate.db}
tokens: {key_file: data/token.key}
`), 0o600)
	elsewhere := t.TempDir()
	t.Chdir(elsewhere)
	token := func(args ...string) (string, string, error) {
		var out, errOut strings.Builder
		err := run(t.Context(), append([]string{"token", args[0], "-config", path}, args[1:]...), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	// Nothing there yet: every command fails and creates nothing.
	for _, args := range [][]string{{"list"}, {"create", "-user", "alice@example.com", "-label", "x"}, {"revoke", "-user", "alice@example.com", "-all"}} {
		if _, _, err := token(args...); err == nil || !strings.Contains(err.Error(), "never creates") {
			t.Errorf("token %v without a key = %v, want an error saying the CLI never creates one", args, err)
		}
	}
	for _, d := range []string{dir, elsewhere} {
		if ents, _ := os.ReadDir(d); len(ents) > 1 || len(ents) == 1 && ents[0].Name() != "smtpgate.yaml" {
			t.Errorf("the CLI created files in %s: %v", d, ents)
		}
	}
	// The key exists but the database does not: still nothing created.
	os.Mkdir(filepath.Join(dir, "data"), 0o700)
	if err := store.WriteKey(filepath.Join(dir, "data", "token.key"), store.NewKey()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := token("list"); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "data", "smtpgate.db")+" does not exist") {
		t.Errorf("token list without a database = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "smtpgate.db")); !os.IsNotExist(err) {
		t.Fatal("the CLI created the database")
	}

	// serve's way of opening creates it; then the CLI, from elsewhere,
	// works on that one.
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := openStore(t.Context(), cfg, slog.New(slog.DiscardHandler), storeServe)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	_, info, err := token("create", "-user", "Alice@Example.com", "-label", "printer")
	if want := "store: sqlite " + filepath.Join(dir, "data", "smtpgate.db") + "\n"; err != nil || !strings.HasPrefix(info, want) {
		t.Fatalf("token create from another directory = %v, said %q; want it to start %q", err, info, want)
	}
	if out, _, err := token("list"); err != nil || !strings.Contains(out, "alice@example.com") {
		t.Errorf("token list = %q, %v", out, err)
	}
	// revoke -user names whose token it must be.
	id := regexp.MustCompile(`created token (\w+) `).FindStringSubmatch(info)
	if id == nil {
		t.Fatalf("no token id in %q", info)
	}
	if _, _, err := token("revoke", "-user", "bob@example.com", id[1]); err == nil || !strings.Contains(err.Error(), "not a token of bob@example.com") {
		t.Errorf("revoke -user bob of alice's token = %v, want refused", err)
	}
	out, info, err := token("revoke", "-user", "alice@example.com", "-all")
	if err != nil || out != "revoked 1 live token(s) of alice@example.com\n" {
		t.Errorf("revoke -all = %q, %v", out, err)
	}
	if !strings.Contains(info, `msg="audit: all tokens revoked" by=cli:`) || !strings.Contains(info, "count=1") {
		t.Errorf("revoke -all logged %q, want an audit line", info)
	}
	ro, err := store.Open(t.Context(), "sqlite", filepath.Join(dir, "data", "smtpgate.db"), store.Options{Key: mustReadKey(t, filepath.Join(dir, "data", "token.key")), ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := ro.ListAll(t.Context())
	ro.Close()
	if len(l) != 1 || !strings.HasPrefix(l[0].RevokedBy, "admin:cli:") || !strings.HasPrefix(l[0].Creator, "cli:") {
		t.Errorf("stored token = %+v, want created by cli:… and revoked by admin:cli:…", l)
	}
	// Nothing left to revoke, or a mistyped user: an error, not "revoked 0".
	for _, u := range []string{"alice@example.com", "alice@exmaple.com"} {
		if out, _, err := token("revoke", "-user", u, "-all"); err == nil || !strings.Contains(err.Error(), "has no live tokens") || out != "" {
			t.Errorf("revoke -all -user %s with nothing to revoke = %q, %v; want an error", u, out, err)
		}
	}
	// A blank or Kelvin-sign user is not an address.
	for _, u := range []string{" ", "\u212Aevin@example.com"} {
		if _, _, err := token("create", "-user", u, "-label", "x"); err == nil || !strings.Contains(err.Error(), "-user") {
			t.Errorf("token create -user %q = %v, want refused", u, err)
		}
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		t.Errorf("the CLI created files in the current directory: %v", ents)
	}
}

// TestKeyChangedStopsServe: serve refuses a key that is not the one the
// database's tokens were made with, and a missing key when the database
// has tokens, saying what to do; it never writes a new key then.
func TestKeyChangedStopsServe(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "smtpgate.yaml")
	os.WriteFile(path, []byte(`smtp: {hostname: h, submission: "127.0.0.1:0", submissions: "", allow_insecure_auth: true}
oidc: {issuers: [{issuer: "http://127.0.0.1:1", audiences: [a]}]}
upstream: {addr: "127.0.0.1:25", tls: none}
store: {dsn: smtpgate.db}
tokens: {key_file: token.key}
log: {level: error}
`), 0o600)
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := openStore(t.Context(), cfg, slog.New(slog.DiscardHandler), storeServe)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Create(t.Context(), store.NewToken{Owner: mailaddr.MustParse("a@example.com"), Creator: "test", Label: "x", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	keyFile := filepath.Join(dir, "token.key")

	os.Remove(keyFile)
	os.WriteFile(keyFile, store.NewKey(), 0o600)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = run(ctx, []string{"serve", "-config", path}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "Restore the key file") {
		t.Errorf("serve with another key = %v, want a refusal saying what to do", err)
	}

	os.Remove(keyFile)
	err = run(ctx, []string{"check-config", "-config", path}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "restore the key file") {
		t.Errorf("check-config with the key missing = %v", err)
	}
	err = run(ctx, []string{"serve", "-config", path}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "restore the key file") {
		t.Errorf("serve with the key missing = %v, want a refusal", err)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Error("serve wrote a new key for a database with tokens")
	}
}

func mustReadKey(t *testing.T, path string) []byte {
	t.Helper()
	k, err := store.ReadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
