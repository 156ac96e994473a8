package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
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
	// LicenseToken is a license (activation) token. When set, every call
	// that needs a login (activation, heartbeats, processes, check-outs)
	// sends it as a bearer token: what a policy with Keygen's default
	// authenticationStrategy TOKEN requires. Validation keeps using the key.
	LicenseToken string `toml:"license_token"`
	// Activation is "machine" (activate this machine, the default) or
	// "none": license-only mode, for licenses not tied to a machine
	// activation (licenseonly.go).
	Activation string `toml:"activation"`

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

	// Policy settings a license cannot read by default (it lacks
	// policy.read): used only when the policy is not readable. The
	// defaults are the strict choices.
	ProcessLeasingStrategy    string `toml:"process_leasing_strategy"`
	OverageStrategy           string `toml:"overage_strategy"`
	ComponentMatchingStrategy string `toml:"component_matching_strategy"`
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

// field describes one configuration setting. The table below is the only
// list of settings: merging, environment variables, defaults, validation,
// live reload, `run --help` and the README's table are all derived from it.
type field struct {
	key     string // TOML key; "table.key" inside a table
	env     string // environment variable, "" if none
	def     string // default, parsed like the environment value; "" for none
	defDoc  string // default as documented, when not def itself
	restart bool   // a live reload keeps the running value and warns
	client  bool   // a live change rebuilds the Keygen client
	secret  bool   // never printed
	noZero  bool   // an explicit 0 in the file is an error (0 cannot mean "default" there)
	check   string // what validation accepts, in words
	ptr     func(*Config) any
	valid   func(*Config) string // "" when fine
}

var (
	reUUID       = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	reAPIVersion = regexp.MustCompile(`^v?[0-9]+\.[0-9]+$`)
)

// MinCertificateTTL is Keygen's floor for a check-out's ttl: a shorter one
// is 400 CHECKOUT_TTL_INVALID (machine_checkout_service.rb).
const MinCertificateTTL = time.Hour

func nonNegative(key string, d func(*Config) Duration) func(*Config) string {
	return func(c *Config) string {
		if d(c) < 0 {
			return key + " must not be negative"
		}
		return ""
	}
}

func positiveDur(key string, d func(*Config) Duration) func(*Config) string {
	return func(c *Config) string {
		if d(c) <= 0 {
			return key + " must be positive"
		}
		return ""
	}
}

func positiveInt(key string, n func(*Config) int) func(*Config) string {
	return func(c *Config) string {
		if n(c) < 1 {
			return key + " must be at least 1"
		}
		return ""
	}
}

func oneOf(key string, v func(*Config) string, allowed ...string) func(*Config) string {
	return func(c *Config) string {
		if slices.Contains(allowed, v(c)) {
			return ""
		}
		return key + " must be one of " + strings.Join(allowed, ", ")
	}
}

var fields = []field{
	{key: "account", env: "KEYGEN_ACCOUNT", restart: true, check: "required",
		ptr: func(c *Config) any { return &c.Account },
		valid: func(c *Config) string {
			if c.Account == "" {
				return "account is required (config key account or KEYGEN_ACCOUNT)"
			}
			return ""
		}},
	{key: "product", env: "KEYGEN_PRODUCT", check: "the product's id (a UUID), not its name or slug",
		ptr: func(c *Config) any { return &c.Product },
		valid: func(c *Config) string {
			if c.Product != "" && !reUUID.MatchString(c.Product) {
				return fmt.Sprintf("product %q must be the product's id (a UUID such as 2f0d…-…): Keygen compares the product scope with the id, so a name or slug makes every validation PRODUCT_SCOPE_MISMATCH", c.Product)
			}
			return ""
		}},
	{key: "environment", env: "KEYGEN_ENVIRONMENT", client: true, check: "a Keygen environment code or id",
		ptr: func(c *Config) any { return &c.Environment }},
	{key: "api_url", env: "KEYGEN_API_URL", def: DefaultAPIURL, restart: true, check: "an http(s) URL",
		ptr: func(c *Config) any { return &c.APIURL },
		valid: func(c *Config) string {
			if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return fmt.Sprintf("api_url %q is not an http(s) URL", c.APIURL)
			}
			return ""
		}},
	{key: "api_version", env: "KEYGEN_API_VERSION", defDoc: "1.7", client: true, check: "MAJOR.MINOR",
		ptr: func(c *Config) any { return &c.APIVersion },
		valid: func(c *Config) string {
			if c.APIVersion != "" && !reAPIVersion.MatchString(c.APIVersion) {
				return fmt.Sprintf("api_version %q is not MAJOR.MINOR", c.APIVersion)
			}
			return ""
		}},
	{key: "public_key", env: "KEYGEN_PUBLIC_KEY", restart: true, check: "required unless insecure_skip_verify; Ed25519 (hex, base64 or PEM)",
		ptr: func(c *Config) any { return &c.PublicKey },
		valid: func(c *Config) string {
			if c.PublicKey == "" && !c.Insecure {
				return "public_key is required to verify Keygen's signatures (config key public_key or KEYGEN_PUBLIC_KEY)"
			}
			return ""
		}},
	{key: "rsa_public_key", restart: true, check: "SPKI PEM; only for rsa-* machine files",
		ptr: func(c *Config) any { return &c.RSAPublicKey }},
	{key: "ecdsa_public_key", restart: true, check: "SPKI PEM; only for ecdsa-p256 machine files",
		ptr: func(c *Config) any { return &c.ECDSAPublicKey }},
	{key: "insecure_skip_verify", def: "false", client: true, check: "true or false; tests only",
		ptr: func(c *Config) any { return &c.Insecure }},
	{key: "license_key", env: "KEYGEN_LICENSE_KEY", secret: true, check: "`activate KEY` overrides it",
		ptr: func(c *Config) any { return &c.LicenseKey }},
	{key: "license_token", env: "KEYGEN_LICENSE_TOKEN", secret: true, client: true, check: "a license token (activ-…); `activate --token` overrides it",
		ptr: func(c *Config) any { return &c.LicenseToken }},
	{key: "activation", env: "KEYGEN_AGENT_ACTIVATION", def: ActivationMachine, restart: true,
		check: "machine, or none (license-only: no machine activation; see License-only mode)",
		ptr:   func(c *Config) any { return &c.Activation },
		valid: oneOf("activation", func(c *Config) string { return c.Activation }, ActivationMachine, ActivationNone)},
	{key: "app_id", env: "KEYGEN_AGENT_APP_ID", defDoc: "product, else account", restart: true, check: "keys the fingerprint",
		ptr: func(c *Config) any { return &c.AppID }},
	{key: "data_dir", env: "KEYGEN_AGENT_DATA_DIR", defDoc: "per OS", restart: true, check: "required",
		ptr: func(c *Config) any { return &c.DataDir },
		valid: func(c *Config) string {
			if c.DataDir == "" {
				return "data_dir is required (config key data_dir, --data-dir or KEYGEN_AGENT_DATA_DIR)"
			}
			return ""
		}},
	{key: "socket", env: "KEYGEN_AGENT_SOCKET", defDoc: "per OS", restart: true, check: "a path (a named pipe on Windows)",
		ptr: func(c *Config) any { return &c.Socket }},
	{key: "socket_group", restart: true, check: "a group name",
		ptr: func(c *Config) any { return &c.SocketGroup }},
	{key: "admin_group", restart: true, check: "a group name",
		ptr: func(c *Config) any { return &c.AdminGroup }},
	{key: "import_dir", defDoc: "data_dir/import", restart: true, check: "a directory",
		ptr: func(c *Config) any { return &c.ImportDir }},
	{key: "certificate_algorithm", def: "aes-256-gcm+ed25519", check: "a Keygen machine-file algorithm",
		ptr: func(c *Config) any { return &c.Algorithm }},
	{key: "certificate_ttl", defDoc: "Keygen's (1 month)", check: "0 or at least 1h",
		ptr: func(c *Config) any { return &c.CertificateTTL },
		valid: func(c *Config) string {
			if d := c.CertificateTTL.D(); d != 0 && d < MinCertificateTTL {
				return fmt.Sprintf("certificate_ttl %v is under Keygen's floor of 1h (every check-out would be CHECKOUT_TTL_INVALID)", d)
			}
			return ""
		}},
	{key: "offline_grace", def: "72h", check: "not negative",
		ptr:   func(c *Config) any { return &c.OfflineGrace },
		valid: nonNegative("offline_grace", func(c *Config) Duration { return c.OfflineGrace })},
	{key: "strict_offline", def: "false", check: "true or false",
		ptr: func(c *Config) any { return &c.StrictOffline }},
	{key: "revalidate_interval", def: "10m", noZero: true, check: "at least 1m",
		ptr: func(c *Config) any { return &c.RevalidateInterval },
		valid: func(c *Config) string {
			if c.RevalidateInterval.D() < time.Minute {
				return "revalidate_interval must be at least 1m"
			}
			return ""
		}},
	{key: "clock_tolerance", def: "10m", check: "not negative",
		ptr:   func(c *Config) any { return &c.ClockTolerance },
		valid: nonNegative("clock_tolerance", func(c *Config) Duration { return c.ClockTolerance })},
	{key: "adoption_window", def: "60s", check: "not negative",
		ptr:   func(c *Config) any { return &c.AdoptionWindow },
		valid: nonNegative("adoption_window", func(c *Config) Duration { return c.AdoptionWindow })},
	{key: "heartbeat_fraction", def: "0.5", noZero: true, check: "in (0.05, 0.8]",
		ptr: func(c *Config) any { return &c.HeartbeatFraction },
		valid: func(c *Config) string {
			// Written so that NaN fails: every comparison with NaN is false.
			if !(c.HeartbeatFraction > 0.05 && c.HeartbeatFraction <= 0.8) {
				return "heartbeat_fraction must be in (0.05, 0.8]"
			}
			return ""
		}},
	{key: "rate_limit.short_window", def: "30s", restart: true, noZero: true, check: "positive",
		ptr:   func(c *Config) any { return &c.RateLimit.Short },
		valid: positiveDur("rate_limit.short_window", func(c *Config) Duration { return c.RateLimit.Short })},
	{key: "rate_limit.short_limit", def: "60", restart: true, noZero: true, check: "at least 1",
		ptr:   func(c *Config) any { return &c.RateLimit.PerShort },
		valid: positiveInt("rate_limit.short_limit", func(c *Config) int { return c.RateLimit.PerShort })},
	{key: "rate_limit.long_window", def: "5m", restart: true, noZero: true, check: "positive",
		ptr:   func(c *Config) any { return &c.RateLimit.Long },
		valid: positiveDur("rate_limit.long_window", func(c *Config) Duration { return c.RateLimit.Long })},
	{key: "rate_limit.long_limit", def: "500", restart: true, noZero: true, check: "at least 1",
		ptr:   func(c *Config) any { return &c.RateLimit.PerLong },
		valid: positiveInt("rate_limit.long_limit", func(c *Config) int { return c.RateLimit.PerLong })},
	{key: "log_level", def: "info", check: "debug, info, warn or error",
		ptr:   func(c *Config) any { return &c.LogLevel },
		valid: oneOf("log_level", func(c *Config) string { return c.LogLevel }, "debug", "info", "warn", "error")},
	{key: "log_format", def: "text", restart: true, check: "text or json",
		ptr:   func(c *Config) any { return &c.LogFormat },
		valid: oneOf("log_format", func(c *Config) string { return c.LogFormat }, "text", "json")},
	{key: "process_leasing_strategy", def: "PER_MACHINE", check: "PER_MACHINE, PER_LICENSE or PER_USER; used when the policy is not readable",
		ptr: func(c *Config) any { return &c.ProcessLeasingStrategy },
		valid: oneOf("process_leasing_strategy", func(c *Config) string { return c.ProcessLeasingStrategy },
			"PER_MACHINE", "PER_LICENSE", "PER_USER")},
	{key: "overage_strategy", def: "NO_OVERAGE", check: "a Keygen overage strategy; used when the policy is not readable",
		ptr: func(c *Config) any { return &c.OverageStrategy },
		valid: oneOf("overage_strategy", func(c *Config) string { return c.OverageStrategy },
			"NO_OVERAGE", "ALWAYS_ALLOW_OVERAGE", "ALLOW_1_25X_OVERAGE", "ALLOW_1_5X_OVERAGE", "ALLOW_2X_OVERAGE")},
	{key: "component_matching_strategy", def: "MATCH_ALL", check: "MATCH_ANY, MATCH_TWO, MATCH_MOST or MATCH_ALL; used when the policy is not readable",
		ptr: func(c *Config) any { return &c.ComponentMatchingStrategy },
		valid: oneOf("component_matching_strategy", func(c *Config) string { return c.ComponentMatchingStrategy },
			"MATCH_ANY", "MATCH_TWO", "MATCH_MOST", "MATCH_ALL")},
}

// value returns the field's value in c (addressable, settable).
func (f field) value(c *Config) reflect.Value { return reflect.ValueOf(f.ptr(c)).Elem() }

// parse sets the field in c from its text form (environment or default).
func (f field) parse(c *Config, s string) error {
	switch p := f.ptr(c).(type) {
	case *string:
		*p = s
	case *bool:
		v, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", f.key, s)
		}
		*p = v
	case *Duration:
		if err := p.UnmarshalText([]byte(s)); err != nil {
			return fmt.Errorf("%s: %q is not a duration such as 90s or 12h", f.key, s)
		}
	case *int:
		v, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not an integer", f.key, s)
		}
		*p = v
	case *float64:
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", f.key, s)
		}
		*p = v
	default:
		return fmt.Errorf("%s: unsupported field type %T", f.key, p)
	}
	return nil
}

// EnvVars lists the environment variables Load reads, in the order applied.
var EnvVars = func() []string {
	var out []string
	for _, f := range fields {
		if f.env != "" {
			out = append(out, f.env)
		}
	}
	return out
}()

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
	// An explicit 0 where 0 cannot mean "the default" is a mistake, not a
	// request for the default.
	var problems []string
	for _, f := range fields {
		if f.noZero && md.IsDefined(strings.Split(f.key, ".")...) && f.value(&c).IsZero() {
			problems = append(problems, f.key+" must not be 0 ("+f.check+")")
		}
	}
	if len(problems) > 0 {
		return Config{}, warnings, fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
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
				return Config{}, warnings, fmt.Errorf("%s: %w", o.File, err)
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
	var env Config
	for _, f := range fields {
		if f.env == "" {
			continue
		}
		if v := getenv(f.env); v != "" {
			if err := f.parse(&env, v); err != nil {
				return Config{}, warnings, fmt.Errorf("%w: %s: %v", ErrConfig, f.env, err)
			}
		}
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

// merge returns base with every non-zero field of top copied over it.
func merge(base, top Config) Config {
	for _, f := range fields {
		if v := f.value(&top); !v.IsZero() {
			f.value(&base).Set(v)
		}
	}
	return base
}

func (c *Config) applyDefaults() {
	for _, f := range fields {
		if f.def != "" && f.value(c).IsZero() {
			if err := f.parse(c, f.def); err != nil {
				panic("agent: config table default: " + err.Error()) // a bug in the table, caught by every test
			}
		}
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
}

// Validate reports every problem that makes the configuration unusable.
func (c *Config) Validate() error {
	var problems []string
	for _, f := range fields {
		if f.valid != nil {
			if p := f.valid(c); p != "" {
				problems = append(problems, p)
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(problems, "; "))
	}
	return nil
}

// restartOnlyChanges lists the settings whose change a live reload does not
// apply (they need a restart), by TOML key, and puts their running values
// back into new.
func restartOnlyChanges(old Config, new *Config) []string {
	var keys []string
	for _, f := range fields {
		if !f.restart {
			continue
		}
		o, n := f.value(&old), f.value(new)
		if !reflect.DeepEqual(o.Interface(), n.Interface()) {
			keys = append(keys, f.key)
			n.Set(o)
		}
	}
	sort.Strings(keys)
	return keys
}

// clientChanges reports whether a reload changed a setting the Keygen
// client is built from.
func clientChanges(old, new Config) bool {
	for _, f := range fields {
		if f.client && !reflect.DeepEqual(f.value(&old).Interface(), f.value(&new).Interface()) {
			return true
		}
	}
	return false
}

// Redacted returns a printable summary with secrets masked.
func (c Config) Redacted() map[string]string {
	out := map[string]string{}
	for _, f := range fields {
		v := f.value(&c)
		if v.IsZero() {
			continue
		}
		s := fmt.Sprint(v.Interface())
		if d, ok := v.Interface().(Duration); ok {
			s = d.D().String()
		}
		if f.secret {
			s = RedactKey(s)
		}
		out[f.key] = s
	}
	return out
}

// ConfigField documents one setting, for `run --help` and the README.
type ConfigField struct {
	Key, Env, Default string
	// Reload is "live" or "restart".
	Reload     string
	Validation string
}

// ConfigFields lists every setting in the order of the README's table.
func ConfigFields() []ConfigField {
	out := make([]ConfigField, 0, len(fields))
	for _, f := range fields {
		cf := ConfigField{Key: f.key, Env: f.env, Default: f.def, Reload: "live", Validation: f.check}
		if f.defDoc != "" {
			cf.Default = f.defDoc
		}
		if f.restart {
			cf.Reload = "restart"
		}
		out = append(out, cf)
	}
	return out
}

// ConfigTableMarkdown is the README's configuration table.
func ConfigTableMarkdown() string {
	var b strings.Builder
	b.WriteString("| key | environment | default | on reload | accepted values |\n")
	b.WriteString("|---|---|---|---|---|\n")
	cell := func(s string) string {
		if s == "" {
			return "–"
		}
		return strings.ReplaceAll(s, "|", `\|`)
	}
	for _, f := range ConfigFields() {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", f.Key, cell(f.Env), cell(f.Default), f.Reload, cell(f.Validation))
	}
	return b.String()
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
