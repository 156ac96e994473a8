package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/keygen-agent/keygen-agent/internal/paths"
)

// Config is the agent's configuration. It is read from one TOML file, then
// overridden by the KEYGEN_* environment variables, then by command-line
// flags (see Load). Zero values mean "the default".
//
// TOML was chosen over JSON because admins annotate config files with
// comments, and BurntSushi/toml reports errors with line numbers and lets
// unknown keys be warned about instead of rejected.
type Config struct {
	// Keygen account and product.
	Account     string `toml:"account"`
	Product     string `toml:"product"`
	Environment string `toml:"environment"`
	APIURL      string `toml:"api_url"`
	APIVersion  string `toml:"api_version"`
	// PublicKey is the account's Ed25519 verify key (hex). Responses and
	// certificates are verified with it; an empty key is refused unless
	// Insecure is set.
	PublicKey      string `toml:"public_key"`
	RSAPublicKey   string `toml:"rsa_public_key"`
	ECDSAPublicKey string `toml:"ecdsa_public_key"`
	// Insecure disables response-signature verification. Only for tests
	// against servers that do not sign; never in production.
	Insecure bool `toml:"insecure_skip_verify"`

	// LicenseKey is the license this machine runs under. It may also be
	// given later with `keygen-agent activate KEY` (stored in the cache).
	LicenseKey string `toml:"license_key"`

	// AppID keys every fingerprint HMAC; defaults to Product.
	AppID string `toml:"app_id"`

	DataDir     string `toml:"data_dir"`
	Socket      string `toml:"socket"`
	SocketGroup string `toml:"socket_group"`
	AdminGroup  string `toml:"admin_group"`
	ImportDir   string `toml:"import_dir"`

	// Algorithm of checked-out machine files; default aes-256-gcm+ed25519.
	Algorithm string `toml:"certificate_algorithm"`
	// CertificateTTL asks Keygen for this machine-file lifetime; 0 uses
	// Keygen's default (one calendar month).
	CertificateTTL Duration `toml:"certificate_ttl"`

	// OfflineGrace bounds offline use after the last successful sync with
	// Keygen (the certificate's own expiry bounds it too). Default 72h.
	OfflineGrace Duration `toml:"offline_grace"`
	// StrictOffline denies new leases while Keygen is unreachable.
	StrictOffline bool `toml:"strict_offline"`
	// RevalidateInterval is how often the license is re-validated online;
	// default 10m, jittered by ±10%.
	RevalidateInterval Duration `toml:"revalidate_interval"`
	// ClockTolerance is how far the local clock may run behind the trusted
	// time watermark before the agent reports clock_tampered; default 10m.
	ClockTolerance Duration `toml:"clock_tolerance"`
	// AdoptionWindow is how long leases of still-running apps survive an
	// agent restart while their clients reconnect; default 60s.
	AdoptionWindow Duration `toml:"adoption_window"`
	// HeartbeatFraction is when, as a share of the heartbeat interval, a
	// ping is sent; default 0.5 (half-way through the window).
	HeartbeatFraction float64 `toml:"heartbeat_fraction"`

	// RateLimit is the request budget shared by every API call; the
	// defaults are Keygen Cloud's client-side limits.
	RateLimit RateLimitConfig `toml:"rate_limit"`

	LogLevel  string `toml:"log_level"`  // debug, info, warn, error
	LogFormat string `toml:"log_format"` // text or json
}

// RateLimitConfig is the request budget: at most PerShort requests in every
// Short window and PerLong in every Long window.
type RateLimitConfig struct {
	Short    Duration `toml:"short_window"`
	PerShort int      `toml:"short_limit"`
	Long     Duration `toml:"long_window"`
	PerLong  int      `toml:"long_limit"`
}

// Duration is a time.Duration read from a TOML string such as "72h".
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// DefaultAPIURL is Keygen Cloud.
const DefaultAPIURL = "https://api.keygen.sh"

// ErrConfig marks configuration errors: the daemon exits with the
// "bad config, do not restart" code on them.
var ErrConfig = errors.New("invalid configuration")

// EnvVars lists the environment variables Load reads, in the order applied.
var EnvVars = []string{
	"KEYGEN_ACCOUNT", "KEYGEN_PRODUCT", "KEYGEN_LICENSE_KEY", "KEYGEN_PUBLIC_KEY",
	"KEYGEN_API_URL", "KEYGEN_ENVIRONMENT", "KEYGEN_AGENT_SOCKET", "KEYGEN_AGENT_DATA_DIR",
	"KEYGEN_AGENT_APP_ID",
}

// ParseConfig decodes a TOML document. Unknown keys are returned as warnings,
// not errors, so an older agent accepts a newer config.
func ParseConfig(data []byte) (Config, []string, error) {
	var c Config
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		return Config{}, nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	var warnings []string
	for _, k := range md.Undecoded() {
		warnings = append(warnings, fmt.Sprintf("unknown config key %q ignored", k.String()))
	}
	return c, warnings, nil
}

// LoadOptions says where Load finds each layer.
type LoadOptions struct {
	// File is the config file; "" means none. A missing file is an error
	// only when FileRequired is set.
	File         string
	FileRequired bool
	Getenv       func(string) string
	// Override is applied last (command-line flags); its non-zero fields win.
	Override Config
	// DefaultDataDir is used when no layer sets data_dir.
	DefaultDataDir string
}

// Load builds the effective configuration: defaults < file < environment <
// flags. It returns warnings (unknown keys) to log.
func Load(o LoadOptions) (Config, []string, error) {
	var c Config
	var warnings []string
	if o.File != "" {
		data, err := os.ReadFile(o.File)
		switch {
		case err == nil:
			c, warnings, err = ParseConfig(data)
			if err != nil {
				return Config{}, nil, fmt.Errorf("%s: %w", o.File, err)
			}
		case errors.Is(err, os.ErrNotExist) && !o.FileRequired:
		default:
			return Config{}, nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	env := Config{
		Account:     getenv("KEYGEN_ACCOUNT"),
		Product:     getenv("KEYGEN_PRODUCT"),
		LicenseKey:  getenv("KEYGEN_LICENSE_KEY"),
		PublicKey:   getenv("KEYGEN_PUBLIC_KEY"),
		APIURL:      getenv("KEYGEN_API_URL"),
		Environment: getenv("KEYGEN_ENVIRONMENT"),
		Socket:      getenv("KEYGEN_AGENT_SOCKET"),
		DataDir:     getenv("KEYGEN_AGENT_DATA_DIR"),
		AppID:       getenv("KEYGEN_AGENT_APP_ID"),
	}
	c = merge(c, env)
	c = merge(c, o.Override)
	if c.DataDir == "" {
		c.DataDir = o.DefaultDataDir
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, warnings, err
	}
	return c, warnings, nil
}

// merge returns base with every non-zero string, bool, number and duration
// field of top copied over it.
func merge(base, top Config) Config {
	str := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	dur := func(dst *Duration, v Duration) {
		if v != 0 {
			*dst = v
		}
	}
	str(&base.Account, top.Account)
	str(&base.Product, top.Product)
	str(&base.Environment, top.Environment)
	str(&base.APIURL, top.APIURL)
	str(&base.APIVersion, top.APIVersion)
	str(&base.PublicKey, top.PublicKey)
	str(&base.RSAPublicKey, top.RSAPublicKey)
	str(&base.ECDSAPublicKey, top.ECDSAPublicKey)
	str(&base.LicenseKey, top.LicenseKey)
	str(&base.AppID, top.AppID)
	str(&base.DataDir, top.DataDir)
	str(&base.Socket, top.Socket)
	str(&base.SocketGroup, top.SocketGroup)
	str(&base.AdminGroup, top.AdminGroup)
	str(&base.ImportDir, top.ImportDir)
	str(&base.Algorithm, top.Algorithm)
	str(&base.LogLevel, top.LogLevel)
	str(&base.LogFormat, top.LogFormat)
	dur(&base.CertificateTTL, top.CertificateTTL)
	dur(&base.OfflineGrace, top.OfflineGrace)
	dur(&base.RevalidateInterval, top.RevalidateInterval)
	dur(&base.ClockTolerance, top.ClockTolerance)
	dur(&base.AdoptionWindow, top.AdoptionWindow)
	dur(&base.RateLimit.Short, top.RateLimit.Short)
	dur(&base.RateLimit.Long, top.RateLimit.Long)
	if top.RateLimit.PerShort != 0 {
		base.RateLimit.PerShort = top.RateLimit.PerShort
	}
	if top.RateLimit.PerLong != 0 {
		base.RateLimit.PerLong = top.RateLimit.PerLong
	}
	if top.HeartbeatFraction != 0 {
		base.HeartbeatFraction = top.HeartbeatFraction
	}
	base.Insecure = base.Insecure || top.Insecure
	base.StrictOffline = base.StrictOffline || top.StrictOffline
	return base
}

func (c *Config) applyDefaults() {
	if c.APIURL == "" {
		c.APIURL = DefaultAPIURL
	}
	if c.AppID == "" {
		c.AppID = c.Product
	}
	if c.AppID == "" {
		c.AppID = c.Account
	}
	if c.ImportDir == "" && c.DataDir != "" {
		c.ImportDir = paths.ImportDir(c.DataDir)
	}
	if c.Algorithm == "" {
		c.Algorithm = "aes-256-gcm+ed25519"
	}
	if c.OfflineGrace == 0 {
		c.OfflineGrace = Duration(72 * time.Hour)
	}
	if c.RevalidateInterval == 0 {
		c.RevalidateInterval = Duration(10 * time.Minute)
	}
	if c.ClockTolerance == 0 {
		c.ClockTolerance = Duration(10 * time.Minute)
	}
	if c.AdoptionWindow == 0 {
		c.AdoptionWindow = Duration(60 * time.Second)
	}
	if c.HeartbeatFraction == 0 {
		c.HeartbeatFraction = 0.5
	}
	if c.RateLimit.Short == 0 {
		c.RateLimit.Short = Duration(30 * time.Second)
	}
	if c.RateLimit.PerShort == 0 {
		c.RateLimit.PerShort = 60
	}
	if c.RateLimit.Long == 0 {
		c.RateLimit.Long = Duration(5 * time.Minute)
	}
	if c.RateLimit.PerLong == 0 {
		c.RateLimit.PerLong = 500
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.LogFormat == "" {
		c.LogFormat = "text"
	}
}

// Validate reports the first problem that makes the configuration unusable.
func (c *Config) Validate() error {
	var problems []string
	if c.Account == "" {
		problems = append(problems, "account is required (config key account or KEYGEN_ACCOUNT)")
	}
	if c.PublicKey == "" && !c.Insecure {
		problems = append(problems, "public_key is required to verify Keygen's signatures (config key public_key or KEYGEN_PUBLIC_KEY)")
	}
	if c.DataDir == "" {
		problems = append(problems, "data_dir is required (config key data_dir, --data-dir or KEYGEN_AGENT_DATA_DIR)")
	}
	if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		problems = append(problems, fmt.Sprintf("api_url %q is not an http(s) URL", c.APIURL))
	}
	if c.HeartbeatFraction <= 0.05 || c.HeartbeatFraction > 0.8 {
		problems = append(problems, "heartbeat_fraction must be in (0.05, 0.8]")
	}
	if c.OfflineGrace < 0 {
		problems = append(problems, "offline_grace must not be negative")
	}
	if c.RevalidateInterval.D() < time.Minute {
		problems = append(problems, "revalidate_interval must be at least 1m")
	}
	if c.RateLimit.PerShort < 1 || c.RateLimit.PerLong < 1 {
		problems = append(problems, "rate_limit limits must be positive")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		problems = append(problems, "log_level must be debug, info, warn or error")
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		problems = append(problems, "log_format must be text or json")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
	}
	return nil
}

// restartOnlyChanges lists the settings whose change is ignored by a live
// reload (they need a restart), by TOML key.
func restartOnlyChanges(old, new Config) []string {
	var keys []string
	add := func(changed bool, key string) {
		if changed {
			keys = append(keys, key)
		}
	}
	add(old.DataDir != new.DataDir, "data_dir")
	add(old.Socket != new.Socket, "socket")
	add(old.SocketGroup != new.SocketGroup, "socket_group")
	add(old.AdminGroup != new.AdminGroup, "admin_group")
	add(old.Account != new.Account, "account")
	add(old.APIURL != new.APIURL, "api_url")
	add(old.PublicKey != new.PublicKey, "public_key")
	add(old.AppID != new.AppID, "app_id")
	add(old.RateLimit != new.RateLimit, "rate_limit")
	sort.Strings(keys)
	return keys
}

// Redacted returns a printable summary with secrets masked.
func (c Config) Redacted() map[string]string {
	return map[string]string{
		"account":        c.Account,
		"product":        c.Product,
		"api_url":        c.APIURL,
		"license_key":    RedactKey(c.LicenseKey),
		"data_dir":       c.DataDir,
		"socket":         c.Socket,
		"offline_grace":  c.OfflineGrace.D().String(),
		"strict_offline": strconv.FormatBool(c.StrictOffline),
	}
}

// RedactKey masks a license key for logs: only a short prefix and the
// length remain.
func RedactKey(k string) string {
	if k == "" {
		return ""
	}
	n := 4
	if len(k) < 12 {
		n = 0
	}
	return k[:n] + "…(" + strconv.Itoa(len(k)) + " chars)"
}
