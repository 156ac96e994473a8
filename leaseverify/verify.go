package leaseverify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Options are what the app knows for itself. Nothing here may come from the
// agent: a stub agent would simply supply matching values.
type Options struct {
	// PublicKey is the account's Ed25519 public key: 64 hex characters,
	// base64 of the SPKI DER ("MCowBQYDK2VwAyEA..."), or PEM.
	PublicKey string
	// PID and StartTime are this process's kernel PID and start time in
	// the agent's format (see docs/protocol.md); the Go client fills them
	// in. StartTime 0 checks the PID part only.
	PID       int
	StartTime uint64
	// Fingerprints are this machine's fingerprint as the app computes it
	// (one or more candidates). Components are component fingerprints the
	// app can compute; one match is enough. At least one of the two is
	// required.
	Fingerprints []string
	Components   []string
	// NotBefore is a time before which this process's own evidence cannot
	// have been signed, typically when the process started. Zero skips it.
	NotBefore time.Time
	// MaxAge, if > 0, refuses a signed Date older than this. The agent
	// refreshes the evidence with every heartbeat, so a MaxAge above the
	// heartbeat interval suits long-lived leases.
	MaxAge time.Duration
	// ClockSkew tolerated between Keygen's clock and this machine's;
	// default 5 minutes.
	ClockSkew time.Duration
	// RequireOnline refuses offline evidence (the machine file alone).
	RequireOnline bool
	// Host, if set, must be the signed host (api.keygen.sh, or the
	// account's custom domain).
	Host string
	// Now defaults to time.Now.
	Now func() time.Time
}

// Result is what a verified lease proves.
type Result struct {
	// Offline: only the machine file was verified; nothing proves the
	// number of running instances.
	Offline     bool
	ProcessID   string    // the Keygen process (empty when Offline)
	MachineID   string    // the machine the machine file names
	LicenseID   string    // the license of that machine
	Fingerprint string    // the fingerprint or component that matched
	Date        time.Time // the signed Date of the process document
	// MachineFileExpiry is when the machine file stops proving anything;
	// nil if it never expires.
	MachineFileExpiry *time.Time
}

// VerifyLease checks the evidence of lease leaseID. It returns an *[Error]
// naming the first failed check.
func VerifyLease(leaseID string, ev *Evidence, o Options) (*Result, error) {
	key, err := ParsePublicKey(o.PublicKey)
	if err != nil {
		return nil, err
	}
	if len(o.Fingerprints) == 0 && len(o.Components) == 0 {
		return nil, fail(CheckOptions, "no fingerprint or component of this machine to compare with")
	}
	if o.PID <= 0 {
		return nil, fail(CheckOptions, "this process's PID is not set")
	}
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	skew := o.ClockSkew
	if skew <= 0 {
		skew = 5 * time.Minute
	}
	if ev == nil {
		return nil, fail(CheckEvidence, "the lease carries no evidence")
	}
	switch ev.Status {
	case StatusSigned:
	case StatusPending:
		return nil, fail(CheckPending, "Keygen has not confirmed the lease yet; wait for lease.confirmed")
	case StatusOffline:
		if o.RequireOnline {
			return nil, fail(CheckOffline, "the lease was granted offline and this app requires Keygen's confirmation")
		}
	default:
		return nil, fail(CheckEvidence, "unknown evidence status %q", ev.Status)
	}

	mf, err := openMachineFile(ev.MachineFile, key)
	if err != nil {
		return nil, err
	}
	if mf.issued.Sub(now) > skew {
		return nil, fail(CheckExpired, "machine file issued in the future (%s)", mf.issued.Format(time.RFC3339))
	}
	if mf.expiry != nil && now.After(*mf.expiry) {
		return nil, fail(CheckExpired, "machine file expired %s", mf.expiry.Format(time.RFC3339))
	}
	res := &Result{MachineID: mf.id, LicenseID: mf.licenseID, MachineFileExpiry: mf.expiry}
	if res.Fingerprint = mf.match(o.Fingerprints, o.Components); res.Fingerprint == "" {
		return nil, fail(CheckFingerprint, "the machine file is for another machine")
	}
	if ev.Status == StatusOffline {
		res.Offline = true
		return res, nil
	}

	p := ev.Process
	if p == nil {
		return nil, fail(CheckEvidence, "signed evidence without a process document")
	}
	sum := sha256.Sum256(p.Body)
	if want := "sha-256=" + base64.StdEncoding.EncodeToString(sum[:]); subtle.ConstantTimeCompare([]byte(p.Digest), []byte(want)) != 1 {
		return nil, fail(CheckDigest, "the Digest does not match the body")
	}
	params := signatureParams(p.Signature)
	if alg := params["algorithm"]; alg != "" && alg != "ed25519" {
		return nil, fail(CheckSignature, "algorithm %q (want ed25519)", alg)
	}
	sig, err := base64.StdEncoding.DecodeString(params["signature"])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fail(CheckSignature, "no valid signature in Keygen-Signature")
	}
	msg := "(request-target): " + p.RequestTarget + "\nhost: " + p.Host + "\ndate: " + p.Date + "\ndigest: " + p.Digest
	if !ed25519.Verify(key, []byte(msg), sig) {
		return nil, fail(CheckSignature, "the signature does not verify with the account key")
	}
	if o.Host != "" && !strings.EqualFold(o.Host, p.Host) {
		return nil, fail(CheckSignature, "signed for host %q, want %q", p.Host, o.Host)
	}

	proc, err := decodeProcess(p.Body)
	if err != nil {
		return nil, err
	}
	res.ProcessID = proc.id
	want := strconv.Itoa(o.PID)
	if o.StartTime != 0 {
		want += "@" + strconv.FormatUint(o.StartTime, 10)
	}
	got := proc.pid
	if o.StartTime == 0 {
		got, _, _ = strings.Cut(got, "@")
	}
	if got != want {
		return nil, fail(CheckProcess, "the process is %q, this process is %q", proc.pid, want)
	}
	if proc.status == "DEAD" {
		return nil, fail(CheckProcess, "Keygen reports the process dead")
	}
	if leaseID == "" || proc.leaseID != leaseID {
		return nil, fail(CheckLease, "the process belongs to lease %q, not %q", proc.leaseID, leaseID)
	}
	if proc.machineID != mf.id {
		return nil, fail(CheckMachine, "the process is on machine %q, the machine file names %q", proc.machineID, mf.id)
	}
	if mf.licenseID != "" && proc.licenseID != "" && proc.licenseID != mf.licenseID {
		return nil, fail(CheckMachine, "the process is under license %q, the machine under %q", proc.licenseID, mf.licenseID)
	}

	date, err := http.ParseTime(p.Date)
	if err != nil {
		return nil, fail(CheckDate, "bad Date %q", p.Date)
	}
	res.Date = date.UTC()
	switch {
	case date.Sub(now) > skew:
		return nil, fail(CheckDate, "signed in the future (%s)", p.Date)
	case !o.NotBefore.IsZero() && o.NotBefore.Sub(date) > skew:
		return nil, fail(CheckDate, "signed %s, before this process started", p.Date)
	case o.MaxAge > 0 && now.Sub(date) > o.MaxAge+skew:
		return nil, fail(CheckDate, "signed %s, older than %s", p.Date, o.MaxAge)
	case mf.expiry != nil && date.After(*mf.expiry):
		return nil, fail(CheckDate, "signed %s, after the machine file expired", p.Date)
	}
	return res, nil
}

// ParsePublicKey parses an Ed25519 public key given as 64 hex characters,
// base64 (raw 32 bytes or SPKI DER) or PEM.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fail(CheckOptions, "no account public key")
	}
	var der []byte
	if b, _ := pem.Decode([]byte(s)); b != nil {
		der = b.Bytes
	} else if h, err := hex.DecodeString(s); err == nil && len(h) == ed25519.PublicKeySize {
		return ed25519.PublicKey(h), nil
	} else if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		if len(b) == ed25519.PublicKeySize {
			return ed25519.PublicKey(b), nil
		}
		der = b
	}
	if der == nil {
		return nil, fail(CheckOptions, "the public key is neither hex, base64 nor PEM")
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fail(CheckOptions, "the public key does not parse: %v", err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fail(CheckOptions, "the public key is %T, not Ed25519", k)
	}
	return ek, nil
}

// signatureParams parses `k="v", k2="v2"`.
func signatureParams(s string) map[string]string {
	out := map[string]string{}
	for _, part := range splitParams(s) {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if _, dup := out[k]; !dup {
			out[k] = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return out
}

// splitParams splits on commas outside quotes.
func splitParams(s string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

type machineFile struct {
	id, licenseID, fingerprint string
	components                 []string
	issued                     time.Time
	expiry                     *time.Time
}

func (m *machineFile) match(fps, comps []string) string {
	for _, f := range fps {
		if f != "" && f == m.fingerprint {
			return f
		}
	}
	for _, c := range comps {
		if c != "" && slices.Contains(m.components, c) {
			return c
		}
	}
	return ""
}

type jsonRel struct {
	Data *struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	} `json:"data"`
}

func (r jsonRel) id() string {
	if r.Data == nil {
		return ""
	}
	return r.Data.ID
}

// openMachineFile verifies the machine file's signature, then decodes it.
func openMachineFile(text string, key ed25519.PublicKey) (*machineFile, error) {
	const begin, end = "-----BEGIN MACHINE FILE-----", "-----END MACHINE FILE-----"
	s := strings.TrimSpace(text)
	if s == "" {
		return nil, fail(CheckMachineFile, "no machine file")
	}
	if !strings.HasPrefix(s, begin) || !strings.HasSuffix(s, end) {
		return nil, fail(CheckMachineFile, "not a machine file")
	}
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, s[len(begin):len(s)-len(end)])
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fail(CheckMachineFile, "the machine file is not base64")
	}
	var env struct{ Enc, Sig, Alg string }
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fail(CheckMachineFile, "the machine file envelope is not JSON")
	}
	if env.Alg != "base64+ed25519" {
		return nil, fail(CheckMachineFile, "algorithm %q (want base64+ed25519)", env.Alg)
	}
	sig, err := base64.StdEncoding.DecodeString(env.Sig)
	if err != nil || !ed25519.Verify(key, []byte("machine/"+env.Enc), sig) {
		return nil, fail(CheckMachineFile, "the machine file's signature does not verify with the account key")
	}
	plain, err := base64.StdEncoding.DecodeString(env.Enc)
	if err != nil {
		return nil, fail(CheckMachineFile, "the machine file payload is not base64")
	}
	var doc struct {
		Data struct {
			Type       string `json:"type"`
			ID         string `json:"id"`
			Attributes struct {
				Fingerprint string `json:"fingerprint"`
			} `json:"attributes"`
			Relationships struct {
				License jsonRel `json:"license"`
			} `json:"relationships"`
		} `json:"data"`
		Included []struct {
			Type       string `json:"type"`
			Attributes struct {
				Fingerprint string `json:"fingerprint"`
			} `json:"attributes"`
		} `json:"included"`
		Meta struct {
			Issued *time.Time `json:"issued"`
			Expiry *time.Time `json:"expiry"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(plain, &doc); err != nil || doc.Data.Type != "machines" || doc.Data.ID == "" || doc.Meta.Issued == nil {
		return nil, fail(CheckMachineFile, "the machine file payload is not a machine document")
	}
	mf := &machineFile{id: doc.Data.ID, licenseID: doc.Data.Relationships.License.id(),
		fingerprint: doc.Data.Attributes.Fingerprint, issued: *doc.Meta.Issued, expiry: doc.Meta.Expiry}
	for _, inc := range doc.Included {
		if inc.Type == "components" && inc.Attributes.Fingerprint != "" {
			mf.components = append(mf.components, inc.Attributes.Fingerprint)
		}
	}
	return mf, nil
}

type process struct {
	id, pid, status, leaseID, machineID, licenseID string
}

func decodeProcess(body []byte) (*process, error) {
	var doc struct {
		Data *struct {
			Type       string `json:"type"`
			ID         string `json:"id"`
			Attributes struct {
				PID      string         `json:"pid"`
				Status   string         `json:"status"`
				Metadata map[string]any `json:"metadata"`
			} `json:"attributes"`
			Relationships struct {
				Machine jsonRel `json:"machine"`
				License jsonRel `json:"license"`
			} `json:"relationships"`
		} `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&doc); err != nil || doc.Data == nil || doc.Data.Type != "processes" || doc.Data.ID == "" {
		return nil, fail(CheckDocument, "the signed body is not one process document")
	}
	d := doc.Data
	lease, _ := d.Attributes.Metadata["leaseId"].(string)
	return &process{id: d.ID, pid: d.Attributes.PID, status: d.Attributes.Status, leaseID: lease,
		machineID: d.Relationships.Machine.id(), licenseID: d.Relationships.License.id()}, nil
}
