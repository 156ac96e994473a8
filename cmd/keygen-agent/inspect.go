package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keygen-agent/keygen-agent/keygen"
)

func init() {
	register(verb{name: "inspect", summary: "explain a license or machine file (.lic): signer, validity window, content", run: runInspect})
}

// Exit codes of inspect, one per verdict. They sit above the shared codes.
const (
	exitInspectMalformed   = 10
	exitInspectNotGenuine  = 11
	exitInspectUnsupported = 12
	exitInspectDecrypt     = 13
	exitInspectExpired     = 14
	exitInspectClockSkew   = 15
)

const inspectHelp = `FILE is a license file or machine file ("-" reads standard input). The public key
defaults to $KEYGEN_PUBLIC_KEY and the license key to $KEYGEN_LICENSE_KEY. Encrypted
license files need --license-key; encrypted machine files need --license-key and
--fingerprint (the machine's fingerprint). License keys are never printed in full.

verdicts (--json "verdict") and exit codes:
  0   valid           genuine, decoded, inside its validity window
  1   -               the file could not be read
  2   -               bad flags or arguments
  10  malformed       not a license/machine file, or damaged
  11  not_genuine     the signature does not verify with the given public key
  12  unsupported     unknown algorithm, or no public key of the kind it is signed with
  13  decrypt_failed  encrypted, and the license key / fingerprint do not open it
  14  expired         genuine, but past its expiry
  15  clock_skew      issued in the future: this machine's clock is behind`

// inspectKeyList is a repeatable string flag.
type inspectKeyList []string

func (s *inspectKeyList) String() string     { return strings.Join(*s, ",") }
func (s *inspectKeyList) Set(v string) error { *s = append(*s, v); return nil }

type inspectReport struct {
	File         string             `json:"file"`
	Verdict      string             `json:"verdict"`
	Detail       string             `json:"detail,omitempty"`
	Kind         string             `json:"kind,omitempty"`
	Algorithm    string             `json:"algorithm,omitempty"`
	Encrypted    bool               `json:"encrypted"`
	Signer       *inspectSigner     `json:"signer,omitempty"`
	Issued       *time.Time         `json:"issued,omitempty"`
	Expiry       *time.Time         `json:"expiry,omitempty"`
	TTL          *int               `json:"ttl,omitempty"`
	License      *inspectLicense    `json:"license,omitempty"`
	Machine      *inspectMachine    `json:"machine,omitempty"`
	Policy       *inspectPolicy     `json:"policy,omitempty"`
	Entitlements []string           `json:"entitlements,omitempty"`
	Components   []inspectComponent `json:"components,omitempty"`
	Metadata     map[string]any     `json:"metadata,omitempty"`
	checkedAt    time.Time
}

type inspectSigner struct {
	Algorithm string `json:"algorithm"`
	KeyID     string `json:"key_id"`
}

type inspectLicense struct {
	ID           string     `json:"id"`
	Name         string     `json:"name,omitempty"`
	Key          string     `json:"key_redacted,omitempty"`
	Status       string     `json:"status,omitempty"`
	Expiry       *time.Time `json:"expiry"`
	MaxMachines  *int       `json:"max_machines"`
	MaxProcesses *int       `json:"max_processes"`
	PolicyID     string     `json:"policy_id,omitempty"`
	ProductID    string     `json:"product_id,omitempty"`
}

type inspectMachine struct {
	ID          string `json:"id"`
	Fingerprint string `json:"fingerprint"`
	Name        string `json:"name,omitempty"`
	Hostname    string `json:"hostname,omitempty"`
	Platform    string `json:"platform,omitempty"`
}

type inspectPolicy struct {
	ID                     string `json:"id"`
	Name                   string `json:"name,omitempty"`
	ProcessLeasingStrategy string `json:"process_leasing_strategy,omitempty"`
	MaxProcesses           *int   `json:"max_processes"`
}

type inspectComponent struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"`
}

func runInspect(e *env) int {
	fs := newFlagSet(e, "inspect", "FILE",
		"Read a Keygen license file or machine file and print what it is, who signed it,\nits validity window and its decoded content.", inspectHelp)
	var pubKeys inspectKeyList
	fs.Var(&pubKeys, "public-key", "account public key: Ed25519 hex, or a PEM file/text for RSA or ECDSA (repeatable)")
	licenseKey := fs.String("license-key", "", "license key, to decrypt an encrypted file")
	fingerprint := fs.String("fingerprint", "", "machine fingerprint, to decrypt an encrypted machine file")
	asJSON := fs.Bool("json", false, "print one JSON object")
	at := fs.String("at", "", "judge validity at this RFC 3339 time instead of now")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(e.stderr, "keygen-agent inspect: exactly one FILE is required")
		fs.Usage()
		return exitUsage
	}
	now := time.Now()
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			fmt.Fprintf(e.stderr, "keygen-agent inspect: --at: %v\n", err)
			return exitUsage
		}
		now = t
	}
	if len(pubKeys) == 0 && e.getenv("KEYGEN_PUBLIC_KEY") != "" {
		pubKeys = append(pubKeys, e.getenv("KEYGEN_PUBLIC_KEY"))
	}
	if len(pubKeys) == 0 {
		fmt.Fprintln(e.stderr, "keygen-agent inspect: a public key is required (--public-key or KEYGEN_PUBLIC_KEY)")
		return exitUsage
	}
	keys, err := inspectParseKeys(pubKeys)
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent inspect: --public-key: %v\n", err)
		return exitUsage
	}
	if *licenseKey == "" {
		*licenseKey = e.getenv("KEYGEN_LICENSE_KEY")
	}
	name := fs.Arg(0)
	data, err := readInspectFile(name, e.stdin)
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent inspect: %v\n", err)
		return exitFailure
	}
	rep := inspectData(data, keys, keygen.OpenOptions{Keys: keys, LicenseKey: *licenseKey, Fingerprint: *fingerprint, Now: now})
	rep.File, rep.checkedAt = name, now
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		printInspect(e.stdout, rep)
	}
	return inspectExit(rep.Verdict)
}

// inspectParseKeys accepts key text or a path to a file holding the key.
func inspectParseKeys(in []string) (keygen.PublicKeys, error) {
	var keys keygen.PublicKeys
	for _, s := range in {
		if !strings.Contains(s, "-----BEGIN") {
			if b, err := os.ReadFile(s); err == nil {
				s = string(b)
			}
		}
		k, err := keygen.ParsePublicKey(s)
		if err != nil {
			return keys, err
		}
		if k.Ed25519 != nil {
			keys.Ed25519 = k.Ed25519
		}
		if k.RSA != nil {
			keys.RSA = k.RSA
		}
		if k.ECDSA != nil {
			keys.ECDSA = k.ECDSA
		}
	}
	return keys, nil
}

func readInspectFile(name string, stdin io.Reader) ([]byte, error) {
	var r io.Reader = stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	const limit = 16 << 20
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > limit {
		return nil, fmt.Errorf("read %s: larger than %d bytes", name, limit)
	}
	return b, nil
}

// inspectData produces the report; it never fails, every problem is a verdict.
func inspectData(data []byte, keys keygen.PublicKeys, o keygen.OpenOptions) *inspectReport {
	rep := &inspectReport{}
	c, err := keygen.ParseCertificate(data)
	if err != nil {
		rep.Verdict, rep.Detail = inspectVerdict(err), err.Error()
		return rep
	}
	rep.Kind, rep.Algorithm, rep.Encrypted = string(c.Kind), c.Alg, c.Encrypted()
	if err := c.Verify(keys); err == nil {
		rep.Signer = &inspectSigner{Algorithm: c.SigningAlgorithm(), KeyID: keys.KeyID(c.SigningAlgorithm())}
	}
	ds, err := c.Open(o)
	rep.Verdict = inspectVerdict(err)
	if err != nil {
		rep.Detail = err.Error()
	}
	if ds != nil {
		inspectFill(rep, ds)
	}
	return rep
}

func inspectVerdict(err error) string {
	switch {
	case err == nil:
		return "valid"
	case errors.Is(err, keygen.ErrCertNotGenuine):
		return "not_genuine"
	case errors.Is(err, keygen.ErrCertUnsupported):
		return "unsupported"
	case errors.Is(err, keygen.ErrCertDecrypt):
		return "decrypt_failed"
	case errors.Is(err, keygen.ErrCertExpired):
		return "expired"
	case errors.Is(err, keygen.ErrCertClockSkew):
		return "clock_skew"
	}
	return "malformed"
}

func inspectExit(v string) int {
	switch v {
	case "valid":
		return exitOK
	case "not_genuine":
		return exitInspectNotGenuine
	case "unsupported":
		return exitInspectUnsupported
	case "decrypt_failed":
		return exitInspectDecrypt
	case "expired":
		return exitInspectExpired
	case "clock_skew":
		return exitInspectClockSkew
	}
	return exitInspectMalformed
}

func inspectFill(rep *inspectReport, ds *keygen.Dataset) {
	rep.Issued, rep.Expiry, rep.TTL = &ds.Issued, ds.Expiry, ds.TTL
	if l := ds.License; l != nil {
		rep.License = &inspectLicense{ID: l.ID, Name: l.Name, Key: inspectRedact(l.Key), Status: l.Status, Expiry: l.Expiry,
			MaxMachines: l.MaxMachines, MaxProcesses: l.MaxProcesses, PolicyID: l.PolicyID, ProductID: l.ProductID}
		rep.Metadata = l.Metadata
	}
	if m := ds.Machine; m != nil {
		rep.Machine = &inspectMachine{ID: m.ID, Fingerprint: m.Fingerprint, Name: m.Name, Hostname: m.Hostname, Platform: m.Platform}
	}
	if p := ds.Policy; p != nil {
		rep.Policy = &inspectPolicy{ID: p.ID, Name: p.Name, ProcessLeasingStrategy: p.ProcessLeasingStrategy, MaxProcesses: p.MaxProcesses}
	}
	for _, en := range ds.Entitlements {
		rep.Entitlements = append(rep.Entitlements, en.Code)
	}
	for _, c := range ds.Components {
		rep.Components = append(rep.Components, inspectComponent{Name: c.Name, Fingerprint: c.Fingerprint})
	}
}

// inspectRedact keeps only enough of a license key to tell keys apart.
func inspectRedact(k string) string {
	if k == "" {
		return ""
	}
	if len(k) <= 12 {
		return "..."
	}
	return k[:4] + "..." + k[len(k)-4:]
}

func printInspect(w io.Writer, r *inspectReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t"+format+"\n", append([]any{k}, args...)...)
	}
	row("file", "%s", r.File)
	row("verdict", "%s", strings.ToUpper(r.Verdict))
	if r.Detail != "" {
		row("reason", "%s", r.Detail)
	}
	if r.Kind != "" {
		enc := "not encrypted"
		if r.Encrypted {
			enc = "encrypted"
		}
		row("kind", "%s file", r.Kind)
		row("algorithm", "%s (%s)", r.Algorithm, enc)
	}
	if r.Signer != nil {
		row("signed by", "%s key %s", r.Signer.Algorithm, r.Signer.KeyID)
	} else if r.Kind != "" {
		row("signed by", "NOT verified with the given key(s)")
	}
	if r.Issued != nil {
		row("issued", "%s", r.Issued.UTC().Format(time.RFC3339))
		if r.Expiry != nil {
			rel := "from now"
			d := r.Expiry.Sub(r.checkedAt)
			if d < 0 {
				rel, d = "ago", -d
			}
			row("expires", "%s (%s %s)", r.Expiry.UTC().Format(time.RFC3339), inspectDuration(d), rel)
		} else {
			row("expires", "never")
		}
	}
	if l := r.License; l != nil {
		row("license", "%s %q status %s key %s", l.ID, l.Name, l.Status, l.Key)
		exp := "never"
		if l.Expiry != nil {
			exp = l.Expiry.UTC().Format(time.RFC3339)
		}
		row("license expiry", "%s", exp)
		row("limits", "machines %s, processes %s", inspectLimit(l.MaxMachines), inspectLimit(l.MaxProcesses))
	}
	if m := r.Machine; m != nil {
		row("machine", "%s fingerprint %s host %q platform %s", m.ID, m.Fingerprint, m.Hostname, m.Platform)
	}
	if p := r.Policy; p != nil {
		row("policy", "%s %q leasing %s", p.ID, p.Name, p.ProcessLeasingStrategy)
	}
	if len(r.Entitlements) > 0 {
		row("entitlements", "%s", strings.Join(r.Entitlements, ", "))
	}
	for _, c := range r.Components {
		row("component", "%s %s", c.Name, c.Fingerprint)
	}
	_ = tw.Flush()
}

func inspectLimit(p *int) string {
	if p == nil {
		return "unlimited"
	}
	return fmt.Sprint(*p)
}

// inspectDuration renders d as "3d4h", "5h12m" or "42s".
func inspectDuration(d time.Duration) string {
	day := 24 * time.Hour
	switch {
	case d >= day:
		return fmt.Sprintf("%dd%dh", d/day, (d%day)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, (d%time.Hour)/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}
