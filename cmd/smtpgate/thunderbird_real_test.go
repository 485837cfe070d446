package main

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestThunderbirdInstallsAddon gives Debian's Thunderbird the generated
// add-on the way the Thunderbird setup page tells an admin to: in a new
// profile's extensions/<id>.xpi with extensions.autoDisableScopes 0. It
// starts Thunderbird headless and reads the profile's extensions.json: the
// add-on must be installed and active, so its manifest passed
// Thunderbird's own schema for oauth_provider. The control: the same
// add-on with scopes as a list (Thunderbird wants one string) is refused.
func TestThunderbirdInstallsAddon(t *testing.T) {
	tb := requireTool(t, "thunderbird")
	issuer := startThunderbirdIdP(t)
	gw := startGateway(t, issuer, "upstream: {addr: 127.0.0.1:9, tls: none}\nautoconfig: {domains: [example.com]}\nthunderbird: {client_id: thunderbird}")
	xpi := filepath.Join(t.TempDir(), "addon.xpi")
	var out bytes.Buffer
	if err := run(t.Context(), []string{"thunderbird-addon", "-config", filepath.Join(gw.dir, "smtpgate.yaml"), "-o", xpi}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(xpi)
	if err != nil {
		t.Fatal(err)
	}
	id := addonID(t, good)

	t.Run("generated add-on is active", func(t *testing.T) {
		t.Parallel()
		a, ok := thunderbirdAddon(t, tb, id, good)
		if !ok || !a.Active || a.AppDisabled || a.UserDisabled {
			t.Errorf("Thunderbird's record of %s: found %v, %+v; want installed and active", id, ok, a)
		}
	})
	t.Run("control: a wrong type is refused", func(t *testing.T) {
		t.Parallel()
		bad := rewriteManifest(t, good, func(m map[string]any) {
			m["oauth_provider"].(map[string]any)["scopes"] = []string{"openid", "email"}
		})
		if a, ok := thunderbirdAddon(t, tb, id, bad); ok && a.Active {
			t.Errorf("Thunderbird activated an add-on whose scopes is a list: %+v", a)
		}
	})
}

type tbAddon struct {
	ID           string `json:"id"`
	Active       bool   `json:"active"`
	UserDisabled bool   `json:"userDisabled"`
	AppDisabled  bool   `json:"appDisabled"`
	Location     string `json:"location"`
}

// thunderbirdAddon runs Thunderbird headless on a new profile holding the
// add-on until it has written its add-on database (at most 90 s), stops
// it, and returns its record of the add-on.
func thunderbirdAddon(t *testing.T, tb, id string, xpi []byte) (tbAddon, bool) {
	t.Helper()
	home := t.TempDir()
	profile := filepath.Join(home, "profile")
	if err := os.MkdirAll(filepath.Join(profile, "extensions"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(profile, "extensions", id+".xpi"), xpi, 0o600); err != nil {
		t.Fatal(err)
	}
	prefs := `user_pref("extensions.autoDisableScopes", 0);
user_pref("app.update.enabled", false);
user_pref("mail.shell.checkDefaultClient", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
`
	if err := os.WriteFile(filepath.Join(profile, "user.js"), []byte(prefs), 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command(tb, "--headless", "--no-remote", "--profile", profile)
	cmd.Env = append(os.Environ(), "HOME="+home, "MOZ_CRASHREPORTER_DISABLE=1")
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its content processes too
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
	defer stop()
	// The add-on database is written once the startup scan is done; the
	// built-in theme's record says it is.
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		var db struct{ Addons []tbAddon }
		if b, err := os.ReadFile(filepath.Join(profile, "extensions.json")); err == nil && json.Unmarshal(b, &db) == nil {
			seen := false
			for _, a := range db.Addons {
				seen = seen || a.ID == "default-theme@mozilla.org"
			}
			if seen {
				for _, a := range db.Addons {
					if a.ID == id {
						return a, true
					}
				}
				return tbAddon{}, false
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	stop()
	t.Fatalf("Thunderbird wrote no add-on database in 90s; its output:\n%s", log.String())
	return tbAddon{}, false
}

func addonID(t *testing.T, xpi []byte) string {
	t.Helper()
	var m struct {
		BrowserSpecificSettings struct {
			Gecko struct {
				ID string `json:"id"`
			} `json:"gecko"`
		} `json:"browser_specific_settings"`
	}
	if err := json.Unmarshal(manifestOf(t, xpi), &m); err != nil || m.BrowserSpecificSettings.Gecko.ID == "" {
		t.Fatalf("add-on manifest has no gecko id: %v", err)
	}
	return m.BrowserSpecificSettings.Gecko.ID
}

func manifestOf(t *testing.T, xpi []byte) []byte {
	t.Helper()
	z, err := zip.NewReader(bytes.NewReader(xpi), int64(len(xpi)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := z.Open("manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rewriteManifest returns the add-on with its manifest changed by edit.
func rewriteManifest(t *testing.T, xpi []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(manifestOf(t, xpi), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	mb, _ := json.Marshal(m)
	z, _ := zip.NewReader(bytes.NewReader(xpi), int64(len(xpi)))
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, f := range z.File {
		fw, err := w.Create(f.Name)
		if err != nil {
			t.Fatal(err)
		}
		if f.Name == "manifest.json" {
			fw.Write(mb)
			continue
		}
		r, _ := f.Open()
		io.Copy(fw, r)
		r.Close()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mb), "oauth_provider") {
		t.Fatal("rewritten manifest lost oauth_provider")
	}
	return buf.Bytes()
}
