package keygen

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// CertKind is the kind of a certificate: "license" or "machine".
type CertKind string

// Certificate kinds.
const (
	KindLicense CertKind = "license"
	KindMachine CertKind = "machine"
)

// Certificate verdicts, wrapped in a *[CertificateError].
var (
	ErrCertMalformed   = sentinel("malformed certificate")
	ErrCertNotGenuine  = sentinel("certificate signature is not genuine")
	ErrCertUnsupported = sentinel("unsupported certificate algorithm")
	ErrCertDecrypt     = sentinel("certificate decryption failed")
	ErrCertExpired     = sentinel("certificate expired")
	ErrCertClockSkew   = sentinel("certificate issued in the future (system clock behind?)")
)

// CertificateError is the error of every certificate operation. Err wraps
// exactly one of the ErrCert* sentinels.
type CertificateError struct {
	Kind CertKind // "" when the kind could not be determined
	Err  error
}

func (e *CertificateError) Error() string {
	switch e.Kind {
	case "":
		return "keygen: certificate: " + e.Err.Error()
	case "key":
		return "keygen: license key: " + e.Err.Error()
	}
	return "keygen: " + string(e.Kind) + " file: " + e.Err.Error()
}
func (e *CertificateError) Unwrap() error { return e.Err }

func certErr(kind CertKind, class error, format string, args ...any) error {
	if format == "" {
		return &CertificateError{Kind: kind, Err: class}
	}
	return &CertificateError{Kind: kind, Err: fmt.Errorf("%w: "+format, append([]any{class}, args...)...)}
}

// Certificate is the envelope of a license or machine file.
type Certificate struct {
	Kind CertKind
	Enc  string
	Sig  string
	Alg  string
}

// maxCertificate bounds the size of a certificate file.
const maxCertificate = 16 << 20

// ParseCertificate parses a license or machine file. It tolerates CRLF,
// any line wrapping, blank lines, stray whitespace and a UTF-8 BOM.
func ParseCertificate(data []byte) (*Certificate, error) {
	if len(data) > maxCertificate {
		return nil, certErr("", ErrCertMalformed, "larger than %d bytes", maxCertificate)
	}
	s := strings.TrimPrefix(string(data), "\ufeff")
	s = strings.TrimSpace(s)
	var kind CertKind
	var body string
	for _, k := range []CertKind{KindLicense, KindMachine} {
		head := "-----BEGIN " + strings.ToUpper(string(k)) + " FILE-----"
		foot := "-----END " + strings.ToUpper(string(k)) + " FILE-----"
		if strings.HasPrefix(s, head) {
			if !strings.HasSuffix(s, foot) {
				return nil, certErr(k, ErrCertMalformed, "missing %q footer", foot)
			}
			if len(s) < len(head)+len(foot) {
				return nil, certErr(k, ErrCertMalformed, "truncated")
			}
			kind, body = k, s[len(head):len(s)-len(foot)]
			break
		}
	}
	if kind == "" {
		return nil, certErr("", ErrCertMalformed, "no -----BEGIN LICENSE FILE----- or -----BEGIN MACHINE FILE----- header")
	}
	body = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n', '\v', '\f':
			return -1
		}
		return r
	}, body)
	raw, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, certErr(kind, ErrCertMalformed, "body is not base64")
	}
	var env struct {
		Enc *string `json:"enc"`
		Sig *string `json:"sig"`
		Alg *string `json:"alg"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, certErr(kind, ErrCertMalformed, "envelope is not JSON")
	}
	if env.Enc == nil || env.Sig == nil || env.Alg == nil || *env.Enc == "" || *env.Sig == "" || *env.Alg == "" {
		return nil, certErr(kind, ErrCertMalformed, "envelope lacks enc, sig or alg")
	}
	return &Certificate{Kind: kind, Enc: *env.Enc, Sig: *env.Sig, Alg: *env.Alg}, nil
}

// splitAlg returns the encoding and signing parts of c.Alg, or an
// ErrCertUnsupported error.
func (c *Certificate) splitAlg() (encoding, signing string, err error) {
	encoding, signing, ok := strings.Cut(c.Alg, "+")
	if !ok {
		return "", "", certErr(c.Kind, ErrCertUnsupported, "algorithm %q", truncate(c.Alg))
	}
	switch encoding {
	case "aes-256-gcm", "base64":
	default:
		return "", "", certErr(c.Kind, ErrCertUnsupported, "encoding %q", truncate(encoding))
	}
	switch signing {
	case "ed25519", "rsa-pss-sha256", "rsa-sha256", "ecdsa-p256":
	default:
		return "", "", certErr(c.Kind, ErrCertUnsupported, "signing algorithm %q", truncate(signing))
	}
	return encoding, signing, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// SigningAlgorithm returns the signing part of the algorithm ("ed25519"...).
func (c *Certificate) SigningAlgorithm() string {
	_, s, _ := strings.Cut(c.Alg, "+")
	return s
}

// Encrypted reports whether the payload is AES-256-GCM encrypted.
func (c *Certificate) Encrypted() bool { return strings.HasPrefix(c.Alg, "aes-256-gcm+") }

// Verify checks the signature over kind+"/"+enc with the key the algorithm
// names. A missing key yields ErrCertUnsupported.
func (c *Certificate) Verify(keys PublicKeys) error {
	_, signing, err := c.splitAlg()
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(c.Sig)
	if err != nil {
		return certErr(c.Kind, ErrCertNotGenuine, "signature is not base64")
	}
	switch verifySig(keys, signing, []byte(string(c.Kind)+"/"+c.Enc), sig) {
	case nil:
		return nil
	case errNoKey:
		return certErr(c.Kind, ErrCertUnsupported, "no %s public key configured", signing)
	case errUnkAlg:
		return certErr(c.Kind, ErrCertUnsupported, "signing algorithm %q", signing)
	default:
		return certErr(c.Kind, ErrCertNotGenuine, "%s signature does not verify", signing)
	}
}

// payload returns the plaintext payload of a verified certificate.
func (c *Certificate) payload(licenseKey, fingerprint string) ([]byte, error) {
	encoding, _, err := c.splitAlg()
	if err != nil {
		return nil, err
	}
	if encoding == "base64" {
		b, err := base64.StdEncoding.DecodeString(c.Enc)
		if err != nil {
			return nil, certErr(c.Kind, ErrCertMalformed, "payload is not base64")
		}
		return b, nil
	}
	parts := strings.Split(c.Enc, ".")
	if len(parts) != 3 {
		return nil, certErr(c.Kind, ErrCertMalformed, "encrypted payload is not ciphertext.iv.tag")
	}
	var dec [3][]byte
	for i, p := range parts {
		if dec[i], err = base64.StdEncoding.DecodeString(p); err != nil {
			return nil, certErr(c.Kind, ErrCertMalformed, "encrypted payload part %d is not base64", i+1)
		}
	}
	ct, iv, tag := dec[0], dec[1], dec[2]
	if len(iv) != 12 || len(tag) != 16 {
		return nil, certErr(c.Kind, ErrCertMalformed, "iv %d bytes, tag %d bytes (want 12, 16)", len(iv), len(tag))
	}
	if licenseKey == "" {
		return nil, certErr(c.Kind, ErrCertDecrypt, "the license key is needed to decrypt")
	}
	if c.Kind == KindMachine && fingerprint == "" {
		return nil, certErr(c.Kind, ErrCertDecrypt, "the machine fingerprint is needed to decrypt")
	}
	secret := licenseKey
	if c.Kind == KindMachine {
		secret += fingerprint
	}
	key := sha256.Sum256([]byte(secret))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, certErr(c.Kind, ErrCertDecrypt, "%v", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, certErr(c.Kind, ErrCertDecrypt, "%v", err)
	}
	sealed := make([]byte, 0, len(ct)+len(tag))
	sealed = append(append(sealed, ct...), tag...)
	plain, err := gcm.Open(nil, iv, sealed, nil)
	if err != nil {
		return nil, certErr(c.Kind, ErrCertDecrypt, "wrong license key or fingerprint")
	}
	return plain, nil
}

// OpenOptions are the inputs of [OpenCertificate].
type OpenOptions struct {
	Keys        PublicKeys
	LicenseKey  string    // needed for aes-256-gcm files
	Fingerprint string    // needed for aes-256-gcm machine files
	Now         time.Time // zero: time.Now()
	// MaxClockDrift is how far in the future "issued" may be. Default 5m;
	// <0 disables the clock check (never the expiry check).
	MaxClockDrift time.Duration
}

// Dataset is the verified content of a certificate.
type Dataset struct {
	Kind         CertKind
	Algorithm    string
	Encrypted    bool
	License      *License // license file: the license; machine file: the included license, if any
	Machine      *Machine // machine files only
	Policy       *Policy  // if included
	Entitlements []Entitlement
	Components   []Component
	Issued       time.Time
	Expiry       *time.Time // nil: never expires
	TTL          *int       // seconds; nil: never expires
	Raw          json.RawMessage
}

// OpenCertificate parses, verifies (before anything else is trusted),
// decrypts and decodes a license or machine file, then checks its time
// window. For ErrCertExpired and ErrCertClockSkew the Dataset is returned
// along with the error; every other error returns a nil Dataset.
func OpenCertificate(data []byte, o OpenOptions) (*Dataset, error) {
	c, err := ParseCertificate(data)
	if err != nil {
		return nil, err
	}
	return c.Open(o)
}

// Open is [OpenCertificate] for a parsed certificate.
func (c *Certificate) Open(o OpenOptions) (*Dataset, error) {
	if err := c.Verify(o.Keys); err != nil {
		return nil, err
	}
	plain, err := c.payload(o.LicenseKey, o.Fingerprint)
	if err != nil {
		return nil, err
	}
	ds, err := decodeDataset(c.Kind, plain)
	if err != nil {
		return nil, certErr(c.Kind, ErrCertMalformed, "%v", err)
	}
	ds.Algorithm, ds.Encrypted = c.Alg, c.Encrypted()
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	drift := o.MaxClockDrift
	if drift == 0 {
		drift = 5 * time.Minute
	}
	if drift >= 0 && ds.Issued.Sub(now) > drift {
		return ds, certErr(c.Kind, ErrCertClockSkew, "issued %s, now %s", ds.Issued.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if ds.Expiry != nil && now.After(*ds.Expiry) {
		return ds, certErr(c.Kind, ErrCertExpired, "expired %s", ds.Expiry.Format(time.RFC3339))
	}
	return ds, nil
}

// decodeDataset decodes a decrypted JSON:API payload.
func decodeDataset(kind CertKind, plain []byte) (*Dataset, error) {
	var doc struct {
		Data     json.RawMessage `json:"data"`
		Included []resource      `json:"included"`
		Meta     *struct {
			Issued *time.Time `json:"issued"`
			Expiry *time.Time `json:"expiry"`
			TTL    *int       `json:"ttl"`
		} `json:"meta"`
	}
	dec := json.NewDecoder(bytes.NewReader(plain))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("payload is not JSON:API: %v", err)
	}
	if doc.Meta == nil || doc.Meta.Issued == nil {
		return nil, errors.New("payload has no meta.issued")
	}
	ds := &Dataset{Kind: kind, Issued: *doc.Meta.Issued, Expiry: doc.Meta.Expiry, TTL: doc.Meta.TTL, Raw: json.RawMessage(plain)}
	d := &document{Data: doc.Data, Included: doc.Included}
	var licenseID string
	switch kind {
	case KindLicense:
		r, err := d.one("licenses")
		if err != nil {
			return nil, err
		}
		if ds.License, err = toLicense(r); err != nil {
			return nil, err
		}
		licenseID = r.ID
	case KindMachine:
		r, err := d.one("machines")
		if err != nil {
			return nil, err
		}
		if ds.Machine, err = toMachine(r); err != nil {
			return nil, err
		}
		licenseID = ds.Machine.LicenseID
	}
	for i := range doc.Included {
		r := &doc.Included[i]
		switch r.Type {
		case "licenses":
			if kind == KindMachine && (ds.License == nil && (licenseID == "" || r.ID == licenseID)) {
				l, err := toLicense(r)
				if err != nil {
					return nil, err
				}
				ds.License = l
			}
		case "policies":
			if ds.Policy == nil {
				p, err := toPolicy(r)
				if err != nil {
					return nil, err
				}
				ds.Policy = p
			}
		case "entitlements":
			e, err := toEntitlement(r)
			if err != nil {
				return nil, err
			}
			ds.Entitlements = append(ds.Entitlements, *e)
		case "components":
			cp, err := toComponent(r)
			if err != nil {
				return nil, err
			}
			ds.Components = append(ds.Components, *cp)
		}
	}
	return ds, nil
}
