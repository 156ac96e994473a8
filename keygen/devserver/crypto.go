package devserver

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"time"
)

// keys are the account's signing keys. RSA-2048 is generated on first use:
// it is slow and most tests never need it.
type keys struct {
	ed    ed25519.PrivateKey
	ec    *ecdsa.PrivateKey
	rsaMu sync.Once
	rsa   *rsa.PrivateKey
}

func newKeys() (*keys, error) {
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ecdsa key: %w", err)
	}
	return &keys{ed: ed, ec: ec}, nil
}

// testRSAKey, when set (by tests), supplies the RSA key instead of
// generating one per server.
var testRSAKey func() *rsa.PrivateKey

func (k *keys) rsaKey() *rsa.PrivateKey {
	k.rsaMu.Do(func() {
		if testRSAKey != nil {
			k.rsa = testRSAKey()
			return
		}
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic("devserver: generate rsa key: " + err.Error())
		}
		k.rsa = key
	})
	return k.rsa
}

func spkiPEM(pub any) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic("devserver: marshal public key: " + err.Error())
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// Signing algorithms (response signatures and certificate signing parts).
const (
	algEd25519 = "ed25519"
	algRSAPSS  = "rsa-pss-sha256"
	algRSA     = "rsa-sha256"
	algECDSA   = "ecdsa-p256"
)

func validSigningAlg(a string) bool {
	switch a {
	case algEd25519, algRSAPSS, algRSA, algECDSA:
		return true
	}
	return false
}

// sign signs data with the named algorithm.
func (k *keys) sign(alg string, data []byte) []byte {
	var (
		sig []byte
		err error
	)
	switch alg {
	case algEd25519:
		return ed25519.Sign(k.ed, data)
	case algRSAPSS:
		h := sha256.Sum256(data)
		sig, err = rsa.SignPSS(rand.Reader, k.rsaKey(), crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto} /* max salt, like OpenSSL */)
	case algRSA:
		h := sha256.Sum256(data)
		sig, err = rsa.SignPKCS1v15(rand.Reader, k.rsaKey(), crypto.SHA256, h[:])
	case algECDSA:
		h := sha256.Sum256(data)
		sig, err = ecdsa.SignASN1(rand.Reader, k.ec, h[:])
	default:
		panic("devserver: unknown signing algorithm " + alg)
	}
	if err != nil {
		panic("devserver: sign: " + err.Error())
	}
	return sig
}

// schemeSigningAlg maps a policy scheme to the certificate signing part
// (keygen-api app/services/abstract_checkout_service.rb).
func schemeSigningAlg(scheme string) string {
	switch scheme {
	case "RSA_2048_PKCS1_PSS_SIGN_V2", "RSA_2048_PKCS1_PSS_SIGN":
		return algRSAPSS
	case "RSA_2048_PKCS1_SIGN_V2", "RSA_2048_PKCS1_SIGN", "RSA_2048_PKCS1_ENCRYPT", "RSA_2048_JWT_RS256":
		return algRSA
	case "ECDSA_P256_SIGN":
		return algECDSA
	}
	return algEd25519
}

// encode64 is Ruby's Base64.encode64: standard padded base64 with a "\n"
// after every 60 characters and at the end.
func encode64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 60 {
		out.WriteString(s[:60])
		out.WriteByte('\n')
		s = s[60:]
	}
	if s != "" {
		out.WriteString(s)
		out.WriteByte('\n')
	}
	return out.String()
}

// certEnvelope keeps Keygen's key order: enc, sig, alg.
type certEnvelope struct {
	Enc string `json:"enc"`
	Sig string `json:"sig"`
	Alg string `json:"alg"`
}

// certificate builds a license or machine file (keygen-api app/services/abstract_checkout_service.rb).
// kind is "license" or "machine"; alg is the full algorithm; secret is the
// AES key material (license key, or license key + fingerprint).
func (k *keys) certificate(kind, alg string, payload []byte, secret string) (string, error) {
	enc, sigAlg, ok := strings.Cut(alg, "+")
	if !ok || !validSigningAlg(sigAlg) {
		return "", fmt.Errorf("unsupported algorithm %q", alg)
	}
	var encoded string
	switch enc {
	case "base64":
		encoded = base64.StdEncoding.EncodeToString(payload)
	case "aes-256-gcm":
		key := sha256.Sum256([]byte(secret))
		block, err := aes.NewCipher(key[:])
		if err != nil {
			return "", err
		}
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			return "", err
		}
		iv := make([]byte, gcm.NonceSize())
		if _, err := rand.Read(iv); err != nil {
			return "", err
		}
		sealed := gcm.Seal(nil, iv, payload, nil)
		ct, tag := sealed[:len(sealed)-gcm.Overhead()], sealed[len(sealed)-gcm.Overhead():]
		b := base64.StdEncoding
		encoded = b.EncodeToString(ct) + "." + b.EncodeToString(iv) + "." + b.EncodeToString(tag)
	default:
		return "", fmt.Errorf("unsupported encoding %q", enc)
	}
	sig := k.sign(sigAlg, []byte(kind+"/"+encoded))
	env, err := json.Marshal(certEnvelope{Enc: encoded, Sig: base64.StdEncoding.EncodeToString(sig), Alg: alg})
	if err != nil {
		return "", err
	}
	label := strings.ToUpper(kind) + " FILE"
	return "-----BEGIN " + label + "-----\n" + encode64(env) + "-----END " + label + "-----\n", nil
}

// signingString is the Keygen-Signature signing string (keygen-api app/controllers/concerns/signature_headers.rb).
func signingString(method, target, host, date, digest string) string {
	return "(request-target): " + strings.ToLower(method) + " " + target + "\n" +
		"host: " + host + "\n" +
		"date: " + date + "\n" +
		"digest: " + digest
}

func bodyDigest(body []byte) string {
	h := sha256.Sum256(body)
	return "sha-256=" + base64.StdEncoding.EncodeToString(h[:])
}

// licenseKey generates a key for a new license per its policy's scheme
// (keygen-api app/models/license.rb, generate_*_key!). Schemes that this server cannot express (legacy encrypt)
// get a random key.
func (k *keys) licenseKey(scheme, account, product string, pol *Policy, lic *License) string {
	var sigAlg string
	switch scheme {
	case "ED25519_SIGN":
		sigAlg = algEd25519
	case "ECDSA_P256_SIGN":
		sigAlg = algECDSA
	case "RSA_2048_PKCS1_SIGN_V2", "RSA_2048_PKCS1_SIGN":
		sigAlg = algRSA
	case "RSA_2048_PKCS1_PSS_SIGN_V2", "RSA_2048_PKCS1_PSS_SIGN":
		sigAlg = algRSAPSS
	default:
		return randomKey()
	}
	var user any
	if lic.OwnerID != "" {
		user = map[string]any{"id": lic.OwnerID, "email": nil}
	}
	var expiry any
	if lic.Expiry != nil {
		expiry = isoTime(*lic.Expiry)
	}
	data, _ := json.Marshal(map[string]any{
		"account": map[string]any{"id": account},
		"product": map[string]any{"id": product},
		"policy":  map[string]any{"id": pol.ID, "duration": pol.Duration},
		"user":    user,
		"license": map[string]any{"id": lic.ID, "created": isoTime(lic.Created), "expiry": expiry},
	})
	enc := base64.URLEncoding.EncodeToString(data)
	if strings.HasSuffix(scheme, "_V2") || scheme == "ED25519_SIGN" || scheme == "ECDSA_P256_SIGN" {
		signed := "key/" + enc
		return signed + "." + base64.URLEncoding.EncodeToString(k.sign(sigAlg, []byte(signed)))
	}
	return enc + "." + base64.URLEncoding.EncodeToString(k.sign(sigAlg, data))
}

// randomKey is Keygen's default key format: six groups of six hex digits
// and a version suffix.
func randomKey() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	h := strings.ToUpper(hex.EncodeToString(b))
	parts := make([]string, 0, 7)
	for i := 0; i < len(h); i += 6 {
		parts = append(parts, h[i:i+6])
	}
	return strings.Join(append(parts, "V3"), "-")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newID returns a random (version 4) UUID.
func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}

// isoTime renders Keygen's timestamps: ISO-8601 UTC with milliseconds.
func isoTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func isoTimePtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return isoTime(*t)
}

// calendarAdd adds ttl seconds the way ActiveSupport::Duration.build(ttl)
// does: years of 31556952 s, months of 2629746 s, weeks and days by the
// calendar (Ruby's Date#>> clamps to the month's end), the rest in seconds.
func calendarAdd(t time.Time, ttl int) time.Time {
	const (
		year  = 31556952
		month = 2629746
		week  = 604800
		day   = 86400
	)
	years := ttl / year
	ttl %= year
	months := ttl / month
	ttl %= month
	weeks := ttl / week
	ttl %= week
	days := ttl / day
	ttl %= day
	t = t.UTC()
	if n := years*12 + months; n != 0 {
		y, m, d := t.Date()
		total := int(m) - 1 + n
		ny, nm := y+total/12, time.Month(total%12+1)
		if last := daysIn(ny, nm); d > last {
			d = last
		}
		t = time.Date(ny, nm, d, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	}
	t = t.AddDate(0, 0, weeks*7+days)
	return t.Add(time.Duration(ttl) * time.Second)
}

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
