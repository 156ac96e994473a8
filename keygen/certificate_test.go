package keygen

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

// flipB64 replaces the base64 character at i with a different one, so the
// decoded bytes change.
func flipB64(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

// rewrap re-encodes a certificate body with another line width and EOL.
func rewrap(t *testing.T, cert []byte, width int, eol string) []byte {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(string(cert)), "\n")
	body := strings.Join(lines[1:len(lines)-1], "")
	var b strings.Builder
	b.WriteString(lines[0] + eol)
	for len(body) > width {
		b.WriteString(body[:width] + eol)
		body = body[width:]
	}
	b.WriteString(body + eol + lines[len(lines)-1] + eol)
	return []byte(b.String())
}

func TestOpenCertificateVerdicts(t *testing.T) {
	s := testSigners(t)
	keys := s.publicKeys()
	exp := t0.Add(30 * 24 * time.Hour)
	machinePL := certPayload(KindMachine, t0, &exp, ptr(2629746))
	licensePL := certPayload(KindLicense, t0, &exp, ptr(2629746))
	valid := makeCert(t, s, certSpec{kind: KindMachine, alg: "aes-256-gcm+ed25519", payload: machinePL, secret: testKey + testFP})
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	open := OpenOptions{Keys: keys, LicenseKey: testKey, Fingerprint: testFP, Now: t0.Add(time.Hour)}

	cases := []struct {
		name    string
		cert    []byte
		mod     func(*OpenOptions)
		want    error // nil: valid
		kind    CertKind
		dataset bool // dataset returned with the error
	}{
		{name: "valid machine file", cert: valid, kind: KindMachine},
		{name: "valid license file base64", cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "base64+ed25519", payload: licensePL}), kind: KindLicense},
		{name: "valid license file base64 without license key", cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "base64+ed25519", payload: licensePL}),
			mod: func(o *OpenOptions) { o.LicenseKey, o.Fingerprint = "", "" }, kind: KindLicense},
		{name: "valid license file aes", cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "aes-256-gcm+ed25519", payload: licensePL, secret: testKey}), kind: KindLicense},
		{name: "valid rsa-pss-sha256", cert: makeCert(t, s, certSpec{kind: KindMachine, alg: "aes-256-gcm+rsa-pss-sha256", payload: machinePL, secret: testKey + testFP}), kind: KindMachine},
		{name: "valid rsa-sha256", cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "base64+rsa-sha256", payload: licensePL}), kind: KindLicense},
		{name: "valid ecdsa-p256", cert: makeCert(t, s, certSpec{kind: KindMachine, alg: "base64+ecdsa-p256", payload: machinePL}), kind: KindMachine},
		{name: "valid no expiry", cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "base64+ed25519", payload: certPayload(KindLicense, t0, nil, nil)}),
			mod: func(o *OpenOptions) { o.Now = t0.AddDate(10, 0, 0) }, kind: KindLicense},
		{name: "valid CRLF", cert: bytes.ReplaceAll(valid, []byte("\n"), []byte("\r\n")), kind: KindMachine},
		{name: "valid rewrapped 76", cert: rewrap(t, valid, 76, "\n"), kind: KindMachine},
		{name: "valid one line CRLF", cert: rewrap(t, valid, 1<<20, "\r\n"), kind: KindMachine},
		{name: "valid blank lines and indentation", cert: []byte("\ufeff\n\n  " + strings.ReplaceAll(string(valid), "\n", "\n\t \n") + "\n\n"), kind: KindMachine},
		{name: "issued within drift", cert: valid, mod: func(o *OpenOptions) { o.Now = t0.Add(-4 * time.Minute) }, kind: KindMachine},

		{name: "expired", cert: valid, mod: func(o *OpenOptions) { o.Now = exp.Add(time.Second) }, want: ErrCertExpired, kind: KindMachine, dataset: true},
		{name: "expired even with drift disabled", cert: valid, mod: func(o *OpenOptions) { o.Now, o.MaxClockDrift = exp.Add(time.Second), -1 }, want: ErrCertExpired, kind: KindMachine, dataset: true},
		{name: "future issued", cert: valid, mod: func(o *OpenOptions) { o.Now = t0.Add(-6 * time.Minute) }, want: ErrCertClockSkew, kind: KindMachine, dataset: true},
		{name: "future issued, check disabled", cert: valid, mod: func(o *OpenOptions) { o.Now, o.MaxClockDrift = t0.Add(-time.Hour), -1 }, kind: KindMachine},
		{name: "wrong key", cert: valid, mod: func(o *OpenOptions) { o.Keys = PublicKeys{Ed25519: otherPub} }, want: ErrCertNotGenuine, kind: KindMachine},
		{name: "flipped byte in enc", cert: makeCert(t, s, certSpec{kind: KindMachine, alg: "aes-256-gcm+ed25519", payload: machinePL, secret: testKey + testFP,
			mutate: func(enc, sig string) (string, string) { return flipB64(enc, 10), sig }}), want: ErrCertNotGenuine, kind: KindMachine},
		{name: "flipped byte in sig", cert: makeCert(t, s, certSpec{kind: KindMachine, alg: "aes-256-gcm+ed25519", payload: machinePL, secret: testKey + testFP,
			mutate: func(enc, sig string) (string, string) { return enc, flipB64(sig, 20) }}), want: ErrCertNotGenuine, kind: KindMachine},
		{name: "sig not base64", cert: makeCert(t, s, certSpec{kind: KindMachine, alg: "base64+ed25519", payload: machinePL,
			mutate: func(enc, sig string) (string, string) { return enc, "!!" + sig }}), want: ErrCertNotGenuine, kind: KindMachine},
		{name: "license file relabelled as machine file", cert: bytes.ReplaceAll(makeCert(t, s, certSpec{kind: KindLicense, alg: "base64+ed25519", payload: machinePL}),
			[]byte("LICENSE FILE"), []byte("MACHINE FILE")), want: ErrCertNotGenuine, kind: KindMachine},
		{name: "wrong license key", cert: valid, mod: func(o *OpenOptions) { o.LicenseKey = "WRONG" }, want: ErrCertDecrypt, kind: KindMachine},
		{name: "wrong fingerprint", cert: valid, mod: func(o *OpenOptions) { o.Fingerprint = "other" }, want: ErrCertDecrypt, kind: KindMachine},
		{name: "license-file secret on machine file", cert: makeCert(t, s, certSpec{kind: KindMachine, alg: "aes-256-gcm+ed25519", payload: machinePL, secret: testKey}),
			want: ErrCertDecrypt, kind: KindMachine},
		{name: "no license key", cert: valid, mod: func(o *OpenOptions) { o.LicenseKey = "" }, want: ErrCertDecrypt, kind: KindMachine},
		{name: "unknown signing algorithm", cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "base64+hmac-sha256", payload: licensePL}), want: ErrCertUnsupported, kind: KindLicense},
		{name: "unknown encoding", cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "aes-128-cbc+ed25519", payload: licensePL}), want: ErrCertUnsupported, kind: KindLicense},
		{name: "no plus in algorithm", cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "ed25519", payload: licensePL}), want: ErrCertUnsupported, kind: KindLicense},
		{name: "rsa without rsa key", cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "base64+rsa-sha256", payload: licensePL}),
			mod: func(o *OpenOptions) { o.Keys.RSA = nil }, want: ErrCertUnsupported, kind: KindLicense},
		{name: "garbage", cert: []byte("\x00\xff garbage"), want: ErrCertMalformed},
		{name: "empty", cert: nil, want: ErrCertMalformed},
		{name: "no footer", cert: valid[:len(valid)-30], want: ErrCertMalformed, kind: KindMachine},
		{name: "header and footer only", cert: []byte("-----BEGIN LICENSE FILE-----\n-----END LICENSE FILE-----\n"), want: ErrCertMalformed, kind: KindLicense},
		{name: "overlapping header and footer", cert: []byte("-----BEGIN LICENSE FILE-----END LICENSE FILE-----"), want: ErrCertMalformed, kind: KindLicense},
		{name: "body not base64", cert: []byte("-----BEGIN LICENSE FILE-----\n%%%%\n-----END LICENSE FILE-----\n"), want: ErrCertMalformed, kind: KindLicense},
		{name: "envelope not JSON", cert: []byte("-----BEGIN LICENSE FILE-----\n" + encode64([]byte("hello")) + "-----END LICENSE FILE-----\n"), want: ErrCertMalformed, kind: KindLicense},
		{name: "envelope missing sig", cert: []byte("-----BEGIN LICENSE FILE-----\n" + encode64([]byte(`{"enc":"e30=","alg":"base64+ed25519"}`)) + "-----END LICENSE FILE-----\n"),
			want: ErrCertMalformed, kind: KindLicense},
		{name: "signed payload not JSON:API", cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "base64+ed25519", payload: []byte(`{"data":null}`)}), want: ErrCertMalformed, kind: KindLicense},
		{name: "signed machine file with license data", cert: makeCert(t, s, certSpec{kind: KindMachine, alg: "base64+ed25519", payload: licensePL}), want: ErrCertMalformed, kind: KindMachine},
		{name: "signed enc not ciphertext.iv.tag", cert: makeCert(t, s, certSpec{kind: KindMachine, alg: "aes-256-gcm+ed25519", payload: machinePL, secret: testKey + testFP,
			mutate: func(enc, sig string) (string, string) {
				enc = enc[:strings.LastIndexByte(enc, '.')]
				return enc, base64.StdEncoding.EncodeToString(s.sign(t, "ed25519", []byte("machine/"+enc)))
			}}), want: ErrCertMalformed, kind: KindMachine},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := open
			if tc.mod != nil {
				tc.mod(&o)
			}
			ds, err := OpenCertificate(tc.cert, o)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				checkDataset(t, ds, tc.kind)
				return
			}
			var ce *CertificateError
			if !errors.As(err, &ce) || !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if ce.Kind != tc.kind {
				t.Errorf("kind %q, want %q", ce.Kind, tc.kind)
			}
			for _, other := range []error{ErrCertMalformed, ErrCertNotGenuine, ErrCertUnsupported, ErrCertDecrypt, ErrCertExpired, ErrCertClockSkew} {
				if other != tc.want && errors.Is(err, other) {
					t.Errorf("also %v", other)
				}
			}
			if tc.dataset != (ds != nil) {
				t.Errorf("dataset returned = %v, want %v", ds != nil, tc.dataset)
			}
			if ds != nil {
				checkDataset(t, ds, tc.kind)
			}
		})
	}
}

func checkDataset(t *testing.T, ds *Dataset, kind CertKind) {
	t.Helper()
	if ds.Kind != kind || !ds.Issued.Equal(t0) || ds.License == nil || ds.License.ID != testLicenseID || len(ds.Entitlements) == 0 || ds.Entitlements[0].Code != "FEATURE_A" || len(ds.Raw) == 0 {
		t.Fatalf("dataset %+v", ds)
	}
	if ds.Expiry != nil && !ds.Expiry.Equal(t0.Add(30*24*time.Hour)) {
		t.Errorf("expiry %v", ds.Expiry)
	}
	if (ds.Expiry == nil) != (ds.TTL == nil) {
		t.Errorf("expiry %v ttl %v", ds.Expiry, ds.TTL)
	}
	switch kind {
	case KindMachine:
		if ds.Machine == nil || ds.Machine.ID != testMachineID || ds.Machine.Fingerprint != testFP || len(ds.Components) != 1 || ds.Components[0].Name != "cpu" {
			t.Errorf("machine dataset %+v", ds)
		}
	case KindLicense:
		if ds.Machine != nil || ds.Policy == nil || ds.Policy.ID != testPolicyID || len(ds.Entitlements) != 2 {
			t.Errorf("license dataset %+v", ds)
		}
	}
	if ds.Encrypted != strings.HasPrefix(ds.Algorithm, "aes-256-gcm+") {
		t.Errorf("encrypted %v alg %q", ds.Encrypted, ds.Algorithm)
	}
}

func TestParseCertificateFields(t *testing.T) {
	s := testSigners(t)
	cert := makeCert(t, s, certSpec{kind: KindLicense, alg: "base64+ed25519", payload: []byte("{}")})
	c, err := ParseCertificate(cert)
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind != KindLicense || c.Alg != "base64+ed25519" || c.Enc != "e30=" || c.SigningAlgorithm() != "ed25519" || c.Encrypted() {
		t.Errorf("%+v", c)
	}
	if err := c.Verify(s.publicKeys()); err != nil {
		t.Errorf("verify: %v", err)
	}
	if err := c.Verify(PublicKeys{}); !errors.Is(err, ErrCertUnsupported) {
		t.Errorf("verify without key: %v", err)
	}
}

func TestVerifyLicenseKey(t *testing.T) {
	s := testSigners(t)
	keys := s.publicKeys()
	mk := func(data string) string {
		signed := "key/" + base64.URLEncoding.EncodeToString([]byte(data))
		return signed + "." + base64.URLEncoding.EncodeToString(ed25519.Sign(s.ed, []byte(signed)))
	}
	data := `{"account":{"id":"a"},"license":{"id":"l","expiry":null}}`
	got, err := VerifyLicenseKey(mk(data), keys)
	if err != nil || string(got) != data {
		t.Fatalf("valid key: %s, %v", got, err)
	}
	got, err = VerifyLicenseKey(mk("CUSTOM-SEED"), keys)
	if err != nil || string(got) != `"CUSTOM-SEED"` {
		t.Errorf("custom seed: %s, %v", got, err)
	}
	unpaddedSig := strings.TrimRight(mk("ab"), "=")
	if _, err := VerifyLicenseKey(unpaddedSig, keys); err != nil {
		t.Errorf("unpadded signature: %v", err)
	}
	k := mk(data)
	tampered := k[:10] + string(rune(k[10]^1)) + k[11:]
	for name, tc := range map[string]struct {
		key  string
		keys PublicKeys
		want error
	}{
		"tampered":   {tampered, keys, ErrCertNotGenuine},
		"wrong key":  {k, PublicKeys{Ed25519: make(ed25519.PublicKey, 32)}, ErrCertNotGenuine},
		"no key":     {k, PublicKeys{}, ErrCertUnsupported},
		"unsigned":   {"ABCD-1234-EFGH", keys, ErrCertMalformed},
		"bad prefix": {"license/abc.def", keys, ErrCertMalformed},
		"bad data":   {"key/!!!.abc", keys, ErrCertMalformed},
	} {
		if _, err := VerifyLicenseKey(tc.key, tc.keys); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestParsePublicKeys(t *testing.T) {
	s := testSigners(t)
	edPub := s.ed.Public().(ed25519.PublicKey)
	der, _ := x509.MarshalPKIXPublicKey(edPub)
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&s.rsa.PublicKey)}))
	for name, in := range map[string]string{
		"hex": s.edHex(), "HEX": strings.ToUpper(s.edHex()), "spki base64": base64.StdEncoding.EncodeToString(der),
		"pem": pemOf(t, edPub), "raw base64": base64.StdEncoding.EncodeToString(edPub),
	} {
		k, err := ParsePublicKeys(in, "", "")
		if err != nil || !k.Ed25519.Equal(edPub) || k.RSA != nil || k.ECDSA != nil {
			t.Errorf("%s: %v %v", name, k, err)
		}
	}
	k, err := ParsePublicKeys("", pemOf(t, &s.rsa.PublicKey), pemOf(t, &s.ecdsa.PublicKey))
	if err != nil || k.RSA == nil || k.ECDSA == nil || k.Ed25519 != nil {
		t.Fatalf("rsa/ecdsa: %v %v", k, err)
	}
	if k, err := ParsePublicKeys("", pkcs1, ""); err != nil || !k.RSA.Equal(&s.rsa.PublicKey) {
		t.Errorf("pkcs1: %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, in := range map[string][3]string{
		"garbage":        {"nope", "", ""},
		"rsa as ed25519": {pemOf(t, &s.rsa.PublicKey), "", ""},
		"ed as rsa":      {"", s.edHex(), ""},
		"p384":           {"", "", pemOf(t, &p384.PublicKey)},
		"bad pem":        {"", "-----BEGIN PUBLIC KEY-----\nxx\n", ""},
	} {
		if _, err := ParsePublicKeys(in[0], in[1], in[2]); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if id := k.KeyID("rsa-sha256"); !strings.HasPrefix(id, "sha256:") || len(id) != 71 {
		t.Errorf("KeyID %q", id)
	}
	if id := (PublicKeys{}).KeyID("ed25519"); id != "" {
		t.Errorf("empty KeyID %q", id)
	}
}
