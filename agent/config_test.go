package agent

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
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
product = "5c0b7a3e-1d2f-4c6b-9a8e-0f1e2d3c4b5a"
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
	if c.Account != "from-env" || c.LicenseKey != "env-key" || c.Product != testProductID || c.DataDir != "/flag/data" {
		t.Errorf("precedence wrong: %+v", c)
	}
	if c.OfflineGrace.D() != 12*time.Hour || c.RateLimit.PerShort != 30 || c.RateLimit.PerLong != 500 {
		t.Errorf("file values/defaults wrong: grace %v rate %+v", c.OfflineGrace.D(), c.RateLimit)
	}
	if c.AppID != testProductID || c.ImportDir != filepath.Join("/flag/data", "import") || c.APIURL != DefaultAPIURL {
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

const testProductID = "5c0b7a3e-1d2f-4c6b-9a8e-0f1e2d3c4b5a"

// Values that cannot work are refused at load, each with its own message.
func TestValidateRejects(t *testing.T) {
	dir := tempDir(t)
	ok := Config{Account: "a", PublicKey: "aa", DataDir: dir}
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"NaN fraction", func(c *Config) { c.HeartbeatFraction = math.NaN() }, "heartbeat_fraction"},
		{"fraction too high", func(c *Config) { c.HeartbeatFraction = 0.95 }, "heartbeat_fraction"},
		{"negative fraction", func(c *Config) { c.HeartbeatFraction = -0.5 }, "heartbeat_fraction"},
		{"negative clock_tolerance", func(c *Config) { c.ClockTolerance = Duration(-time.Minute) }, "clock_tolerance"},
		{"negative certificate_ttl", func(c *Config) { c.CertificateTTL = Duration(-time.Hour) }, "certificate_ttl"},
		{"certificate_ttl under 1h", func(c *Config) { c.CertificateTTL = Duration(30 * time.Minute) }, "certificate_ttl"},
		{"negative adoption_window", func(c *Config) { c.AdoptionWindow = Duration(-time.Second) }, "adoption_window"},
		{"negative offline_grace", func(c *Config) { c.OfflineGrace = Duration(-time.Hour) }, "offline_grace"},
		{"negative short window", func(c *Config) { c.RateLimit.Short = Duration(-time.Second) }, "rate_limit.short_window"},
		{"negative long window", func(c *Config) { c.RateLimit.Long = Duration(-time.Second) }, "rate_limit.long_window"},
		{"negative short limit", func(c *Config) { c.RateLimit.PerShort = -1 }, "rate_limit.short_limit"},
		{"negative long limit", func(c *Config) { c.RateLimit.PerLong = -5 }, "rate_limit.long_limit"},
		{"product slug", func(c *Config) { c.Product = "demo-app" }, "product"},
		{"api_version", func(c *Config) { c.APIVersion = "latest" }, "api_version"},
		{"leasing", func(c *Config) { c.ProcessLeasingStrategy = "PER_GALAXY" }, "process_leasing_strategy"},
	}
	for _, tc := range cases {
		c := ok
		tc.mod(&c)
		_, _, err := Load(LoadOptions{Getenv: func(string) string { return "" }, Override: c})
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrConfig about %s", tc.name, err, tc.want)
		}
	}
	c := ok
	c.Product, c.CertificateTTL, c.APIVersion = testProductID, Duration(time.Hour), "1.7"
	if _, _, err := Load(LoadOptions{Getenv: func(string) string { return "" }, Override: c}); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

// An explicit 0 in the file, where 0 cannot mean the default, is an error
// rather than silently the default.
func TestExplicitZeroRejected(t *testing.T) {
	for _, body := range []string{"[rate_limit]\nshort_limit = 0\n", "heartbeat_fraction = 0.0\n", "revalidate_interval = \"0s\"\n"} {
		if _, _, err := ParseConfig([]byte(body)); !errors.Is(err, ErrConfig) {
			t.Errorf("%q: err = %v", body, err)
		}
	}
	if _, _, err := ParseConfig([]byte("certificate_ttl = \"0s\"\n")); err != nil {
		t.Errorf("certificate_ttl 0 means Keygen's default: %v", err)
	}
}

// Every environment variable in the table is read, typed and validated.
func TestEnvFromTable(t *testing.T) {
	dir := tempDir(t)
	env := map[string]string{"KEYGEN_ACCOUNT": "acct", "KEYGEN_PUBLIC_KEY": "aa", "KEYGEN_AGENT_DATA_DIR": dir,
		"KEYGEN_LICENSE_TOKEN": "activ-secret", "KEYGEN_API_VERSION": "1.6", "KEYGEN_ENVIRONMENT": "staging"}
	c, _, err := Load(LoadOptions{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	if c.LicenseToken != "activ-secret" || c.APIVersion != "1.6" || c.Environment != "staging" {
		t.Errorf("env not applied: %+v", c)
	}
	if r := c.Redacted(); strings.Contains(r["license_token"], "secret") || r["license_token"] == "" {
		t.Errorf("token not redacted: %q", r["license_token"])
	}
	for _, want := range []string{"KEYGEN_LICENSE_TOKEN", "KEYGEN_API_VERSION", "KEYGEN_ACCOUNT"} {
		if !slices.Contains(EnvVars, want) {
			t.Errorf("EnvVars lacks %s", want)
		}
	}
}

// A live reload keeps and reports every restart-only setting, including
// the ones the hand-written list had missed, and tells when the Keygen
// client must be rebuilt.
func TestReloadFieldClasses(t *testing.T) {
	old := Config{Account: "a", RSAPublicKey: "r1", ECDSAPublicKey: "e1", ImportDir: "/i1", LogFormat: "text", OfflineGrace: Duration(time.Hour)}
	nc := old
	nc.RSAPublicKey, nc.ECDSAPublicKey, nc.ImportDir, nc.OfflineGrace = "r2", "e2", "/i2", Duration(2*time.Hour)
	keys := restartOnlyChanges(old, &nc)
	if !slices.Equal(keys, []string{"ecdsa_public_key", "import_dir", "rsa_public_key"}) {
		t.Errorf("restart-only keys = %v", keys)
	}
	if nc.RSAPublicKey != "r1" || nc.ECDSAPublicKey != "e1" || nc.ImportDir != "/i1" || nc.OfflineGrace.D() != 2*time.Hour {
		t.Errorf("after reload: %+v", nc)
	}
	for _, mod := range []func(*Config){
		func(c *Config) { c.Environment = "x" }, func(c *Config) { c.APIVersion = "1.6" },
		func(c *Config) { c.Insecure = true }, func(c *Config) { c.LicenseToken = "t" },
	} {
		nc := old
		mod(&nc)
		if !clientChanges(old, nc) {
			t.Errorf("no client rebuild for %+v", nc)
		}
	}
	if nc := old; clientChanges(old, nc) {
		t.Error("rebuild without a change")
	}
}

// The README's configuration table is the one the field table generates.
func TestReadmeConfigTable(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- config-table:begin -->\n", "<!-- config-table:end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the %q … %q markers", begin, end)
	}
	if got, want := s[i+len(begin):j], ConfigTableMarkdown(); got != want {
		t.Errorf("README.md's configuration table is out of date; replace it with:\n%s", want)
	}
}

// Every code the agent explains is in the README's troubleshooting section.
func TestReadmeTroubleshootingCoversRemedies(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "## Troubleshooting")
	if i < 0 {
		t.Fatal("no troubleshooting section")
	}
	s = s[i:]
	codes := []string{"LICENSE_NOT_ALLOWED", "TOKEN_NOT_ALLOWED", "TOKEN_INVALID", "TOKEN_ACTIVATIONS_EXCEEDED",
		"LICENSE_SUSPENDED", "LICENSE_BANNED", "USER_BANNED", "LICENSE_EXPIRED", "FINGERPRINT_TAKEN_ELSEWHERE"}
	for c := range scopeRemedies {
		codes = append(codes, c)
	}
	for _, c := range codes {
		if Explain(c) == "" {
			t.Errorf("%s: no remedy", c)
		}
		if !strings.Contains(s, c) {
			t.Errorf("README troubleshooting does not mention %s", c)
		}
	}
}
