package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tempDir is t.TempDir without its cleanup check: under Wine (where the
// Windows tests run) os.RemoveAll of a non-empty directory fails.
func tempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "kga-config")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func TestLoadPrecedence(t *testing.T) {
	dir := tempDir(t)
	file := filepath.Join(dir, "agent.toml")
	body := `# comments are why this is TOML
account = "from-file"
product = "prod-file"
public_key = "aa"
license_key = "file-key"
data_dir = "/var/lib/from-file"
offline_grace = "12h"
mystery_key = 1
[rate_limit]
short_limit = 30
`
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KEYGEN_ACCOUNT": "from-env", "KEYGEN_LICENSE_KEY": "env-key"}
	c, warnings, err := Load(LoadOptions{
		File:     file,
		Getenv:   func(k string) string { return env[k] },
		Override: Config{DataDir: "/flag/data"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Account != "from-env" || c.LicenseKey != "env-key" || c.Product != "prod-file" || c.DataDir != "/flag/data" {
		t.Errorf("precedence wrong: %+v", c)
	}
	if c.OfflineGrace.D() != 12*time.Hour || c.RateLimit.PerShort != 30 || c.RateLimit.PerLong != 500 {
		t.Errorf("file values/defaults wrong: grace %v rate %+v", c.OfflineGrace.D(), c.RateLimit)
	}
	if c.AppID != "prod-file" || c.ImportDir != filepath.Join("/flag/data", "import") || c.APIURL != DefaultAPIURL {
		t.Errorf("derived defaults wrong: %+v", c)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "mystery_key") {
		t.Errorf("warnings = %v", warnings)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := tempDir(t)
	bad := filepath.Join(dir, "bad.toml")
	_ = os.WriteFile(bad, []byte("account = \n"), 0o600)
	noenv := func(string) string { return "" }
	cases := map[string]LoadOptions{
		"syntax":           {File: bad, Getenv: noenv},
		"missing required": {File: filepath.Join(dir, "absent.toml"), FileRequired: true, Getenv: noenv},
		"no account":       {Getenv: noenv, Override: Config{PublicKey: "aa", DataDir: dir}},
		"no public key":    {Getenv: noenv, Override: Config{Account: "a", DataDir: dir}},
		"bad url":          {Getenv: noenv, Override: Config{Account: "a", PublicKey: "aa", DataDir: dir, APIURL: "ftp://x"}},
		"bad fraction":     {Getenv: noenv, Override: Config{Account: "a", PublicKey: "aa", DataDir: dir, HeartbeatFraction: 0.95}},
	}
	for name, o := range cases {
		if _, _, err := Load(o); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
		}
	}
	// A missing default file is fine.
	if _, _, err := Load(LoadOptions{File: filepath.Join(dir, "absent.toml"), Getenv: noenv,
		Override: Config{Account: "a", PublicKey: "aa", DataDir: dir}}); err != nil {
		t.Errorf("missing optional file: %v", err)
	}
}

func TestRedactKey(t *testing.T) {
	k := "key/eyJhY2NvdW50Ijp7ImlkIjoiZjg1YzY5ZDgtZDI2Ni00ZTA3"
	r := RedactKey(k)
	if strings.Contains(r, "eyJhY2") || !strings.HasPrefix(r, "key/") {
		t.Errorf("RedactKey = %q", r)
	}
	if RedactKey("short") != "…(5 chars)" {
		t.Errorf("short key = %q", RedactKey("short"))
	}
}

// FuzzParseConfig: any bytes give a config or an ErrConfig, never a panic.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("account = \"a\"\noffline_grace = \"1h\"\n[rate_limit]\nshort_limit = 5\n"))
	f.Add([]byte("offline_grace = \"forever\""))
	f.Add([]byte("[[x]]\n[x.y]\n"))
	f.Add([]byte{0xff, 0xfe, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		c.applyDefaults()
		_ = c.Validate()
	})
}
