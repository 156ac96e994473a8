package keygen

import (
	"bytes"
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
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// t0 is the fixed "now" of certificate and signature tests.
var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// signers holds the test account's private keys.
type signers struct {
	ed    ed25519.PrivateKey
	rsa   *rsa.PrivateKey
	ecdsa *ecdsa.PrivateKey
}

var (
	testSignersOnce sync.Once
	testSignersVal  signers
)

// testSigners returns the test account keys; the Ed25519 key is derived
// from a fixed seed so fuzz seed files stay valid across runs.
func testSigners(t testing.TB) signers {
	t.Helper()
	testSignersOnce.Do(func() {
		seed := sha256.Sum256([]byte("keygen-agent test account"))
		testSignersVal.ed = ed25519.NewKeyFromSeed(seed[:])
		var err error
		if testSignersVal.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if testSignersVal.ecdsa, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	})
	return testSignersVal
}

func (s signers) publicKeys() PublicKeys {
	return PublicKeys{Ed25519: s.ed.Public().(ed25519.PublicKey), RSA: &s.rsa.PublicKey, ECDSA: &s.ecdsa.PublicKey}
}

func (s signers) edHex() string { return hex.EncodeToString(s.ed.Public().(ed25519.PublicKey)) }

func pemOf(t testing.TB, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func (s signers) sign(t testing.TB, alg string, msg []byte) []byte {
	t.Helper()
	h := sha256.Sum256(msg)
	var sig []byte
	var err error
	switch alg {
	case "ed25519":
		return ed25519.Sign(s.ed, msg)
	case "rsa-pss-sha256":
		sig, err = rsa.SignPSS(rand.Reader, s.rsa, crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "rsa-sha256":
		sig, err = rsa.SignPKCS1v15(nil, s.rsa, crypto.SHA256, h[:])
	case "ecdsa-p256":
		sig, err = ecdsa.SignASN1(rand.Reader, s.ecdsa, h[:])
	default:
		t.Fatalf("sign: unknown alg %q", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// encode64 mimics Ruby's Base64.encode64: 60-column lines, each \n-terminated.
func encode64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 60 {
		out.WriteString(s[:60] + "\n")
		s = s[60:]
	}
	out.WriteString(s + "\n")
	return out.String()
}

// certSpec describes a test certificate.
type certSpec struct {
	kind    CertKind
	alg     string // full algorithm
	payload []byte
	secret  string // aes key material (license key [+ fingerprint])
	iv      []byte // nil: fixed zero-based IV (deterministic)
	mutate  func(enc, sig string) (string, string)
}

func makeCert(t testing.TB, s signers, c certSpec) []byte {
	t.Helper()
	encoding, signing, _ := strings.Cut(c.alg, "+")
	var enc string
	switch encoding {
	case "aes-256-gcm":
		key := sha256.Sum256([]byte(c.secret))
		block, _ := aes.NewCipher(key[:])
		gcm, _ := cipher.NewGCM(block)
		iv := c.iv
		if iv == nil {
			iv = []byte("0123456789ab")
		}
		sealed := gcm.Seal(nil, iv, c.payload, nil)
		ct, tag := sealed[:len(sealed)-16], sealed[len(sealed)-16:]
		b := base64.StdEncoding.EncodeToString
		enc = b(ct) + "." + b(iv) + "." + b(tag)
	default:
		enc = base64.StdEncoding.EncodeToString(c.payload)
	}
	sigAlg := signing
	if sigAlg != "ed25519" && sigAlg != "rsa-pss-sha256" && sigAlg != "rsa-sha256" && sigAlg != "ecdsa-p256" {
		sigAlg = "ed25519"
	}
	sig := base64.StdEncoding.EncodeToString(s.sign(t, sigAlg, []byte(string(c.kind)+"/"+enc)))
	if c.mutate != nil {
		enc, sig = c.mutate(enc, sig)
	}
	env, _ := json.Marshal(struct {
		Enc string `json:"enc"`
		Sig string `json:"sig"`
		Alg string `json:"alg"`
	}{enc, sig, c.alg})
	label := strings.ToUpper(string(c.kind)) + " FILE"
	return []byte("-----BEGIN " + label + "-----\n" + encode64(env) + "-----END " + label + "-----\n")
}

const (
	testLicenseID = "6f0c5ae2-8f0e-4a57-9d3c-52c3f31ad0c1"
	testMachineID = "a1e0c9c2-1b6e-4f1e-9d3e-2f3b4c5d6e7f"
	testPolicyID  = "b7c2d4e6-0000-4000-8000-000000000001"
	testKey       = "ABCD-1234-EFGH-5678"
	testFP        = "fp-0123456789abcdef"
)

func licenseRes(id string) map[string]any {
	return map[string]any{
		"id": id, "type": "licenses",
		"attributes": map[string]any{
			"name": "Pro", "key": testKey, "status": "ACTIVE", "scheme": nil, "expiry": "2027-01-01T00:00:00.000Z",
			"suspended": false, "strict": true, "floating": true, "protected": false, "requireHeartbeat": true,
			"maxMachines": 3, "maxProcesses": 5, "maxUsers": nil, "maxCores": nil, "uses": 2,
			"metadata": map[string]any{"tier": "pro"}, "created": "2026-01-01T00:00:00.000Z", "updated": "2026-01-02T00:00:00.000Z",
		},
		"relationships": map[string]any{
			"policy":  map[string]any{"data": map[string]any{"type": "policies", "id": testPolicyID}},
			"product": map[string]any{"data": map[string]any{"type": "products", "id": "prod-1"}},
		},
	}
}

func machineRes(id string) map[string]any {
	return map[string]any{
		"id": id, "type": "machines",
		"attributes": map[string]any{
			"fingerprint": testFP, "name": "box", "hostname": "box.local", "platform": "linux/amd64", "ip": nil,
			"heartbeatStatus": "ALIVE", "cores": 8, "memory": 17179869184, "requireHeartbeat": true,
			"heartbeatDuration": 600, "maxProcesses": 5, "lastHeartbeat": "2026-06-01T11:59:00.000Z",
			"nextHeartbeat": "2026-06-01T12:09:00.000Z", "metadata": map[string]any{}, "created": "2026-05-01T00:00:00.000Z",
		},
		"relationships": map[string]any{"license": map[string]any{"data": map[string]any{"type": "licenses", "id": testLicenseID}}},
	}
}

func processRes(id, pid string) map[string]any {
	return map[string]any{
		"id": id, "type": "processes",
		"attributes": map[string]any{
			"pid": pid, "status": "ALIVE", "interval": 600, "lastHeartbeat": "2026-06-01T12:00:00.000Z",
			"nextHeartbeat": "2026-06-01T12:10:00.000Z", "metadata": map[string]any{"app": "cad"}, "created": "2026-06-01T12:00:00.000Z",
		},
		"relationships": map[string]any{
			"machine": map[string]any{"data": map[string]any{"type": "machines", "id": testMachineID}},
			"license": map[string]any{"data": map[string]any{"type": "licenses", "id": testLicenseID}},
		},
	}
}

func componentRes(id, fp, name string) map[string]any {
	return map[string]any{
		"id": id, "type": "components",
		"attributes":    map[string]any{"fingerprint": fp, "name": name, "metadata": nil},
		"relationships": map[string]any{"machine": map[string]any{"data": map[string]any{"type": "machines", "id": testMachineID}}},
	}
}

func entitlementRes(id, code string) map[string]any {
	return map[string]any{"id": id, "type": "entitlements", "attributes": map[string]any{"code": code, "name": strings.ToLower(code), "metadata": nil}}
}

func policyRes() map[string]any {
	return map[string]any{"id": testPolicyID, "type": "policies", "attributes": map[string]any{
		"name": "Floating", "scheme": "ED25519_SIGN", "overageStrategy": "NO_OVERAGE", "processLeasingStrategy": "PER_MACHINE",
		"machineLeasingStrategy": "PER_LICENSE", "heartbeatCullStrategy": "DEACTIVATE_DEAD", "heartbeatResurrectionStrategy": "NO_REVIVE",
		"heartbeatBasis": "FROM_CREATION", "expirationStrategy": "RESTRICT_ACCESS", "authenticationStrategy": "LICENSE",
		"machineMatchingStrategy": "MATCH_ANY", "componentMatchingStrategy": "MATCH_TWO", "strict": true, "floating": true,
		"requireHeartbeat": true, "maxMachines": 3, "maxProcesses": 5, "maxCores": nil, "maxUsers": nil, "heartbeatDuration": 600, "duration": nil,
	}}
}

// certPayload builds a decrypted certificate payload.
func certPayload(kind CertKind, issued time.Time, expiry *time.Time, ttl *int) []byte {
	doc := map[string]any{"meta": map[string]any{"issued": issued.Format("2006-01-02T15:04:05.000Z"), "expiry": nil, "ttl": ttl}}
	if expiry != nil {
		doc["meta"].(map[string]any)["expiry"] = expiry.Format("2006-01-02T15:04:05.000Z")
	}
	if kind == KindLicense {
		doc["data"] = licenseRes(testLicenseID)
		doc["included"] = []any{entitlementRes("e1", "FEATURE_A"), entitlementRes("e2", "FEATURE_B"), policyRes()}
	} else {
		doc["data"] = machineRes(testMachineID)
		doc["included"] = []any{licenseRes(testLicenseID), entitlementRes("e1", "FEATURE_A"), componentRes("c1", "cfp1", "cpu")}
	}
	b, _ := json.Marshal(doc)
	return b
}

// fakeKeygen is a loopback Keygen that signs its responses like Keygen does.
type fakeKeygen struct {
	t   testing.TB
	srv *httptest.Server
	mux *http.ServeMux
	s   signers

	mu     sync.Mutex
	tamper string    // "", "nosig", "badsig", "digest", "port", "rsa"
	now    time.Time // server clock for Date
}

const acct = "acct-1"

func newFake(t testing.TB) *fakeKeygen {
	f := &fakeKeygen{t: t, mux: http.NewServeMux(), s: testSigners(t), now: t0}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeKeygen) set(tamper string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tamper, f.now = tamper, now
}

// handle registers a handler under the account prefix; pattern is "METHOD /path".
func (f *fakeKeygen) handle(pattern string, h http.HandlerFunc) {
	m, p, _ := strings.Cut(pattern, " ")
	f.mux.HandleFunc(m+" /v1/accounts/"+acct+p, h)
}

func (f *fakeKeygen) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, r)
	f.mu.Lock()
	tamper, now := f.tamper, f.now
	f.mu.Unlock()
	body := rec.Body.Bytes()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	st := rec.Code
	if st != http.StatusTooManyRequests && st < 500 && tamper != "nosig" {
		date := now.UTC().Format(http.TimeFormat)
		sum := sha256.Sum256(body)
		digest := "sha-256=" + base64.StdEncoding.EncodeToString(sum[:])
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		if tamper == "port" {
			host = r.Host
		}
		msg := "(request-target): " + strings.ToLower(r.Method) + " " + r.RequestURI + "\nhost: " + host + "\ndate: " + date + "\ndigest: " + digest
		alg := "ed25519"
		if tamper == "rsa" {
			alg = "rsa-pss-sha256"
		}
		sig := f.s.sign(f.t, alg, []byte(msg))
		if tamper == "badsig" {
			sig[3] ^= 0x40
		}
		if tamper == "digest" {
			digest = "sha-256=" + base64.StdEncoding.EncodeToString(make([]byte, 32))
		}
		w.Header().Set("Date", date)
		w.Header().Set("Keygen-Date", date)
		w.Header().Set("Digest", digest)
		w.Header().Set("Keygen-Signature", `keyid="`+acct+`", algorithm="`+alg+`", signature="`+base64.StdEncoding.EncodeToString(sig)+`", headers="(request-target) host date digest"`)
	}
	w.WriteHeader(st)
	_, _ = w.Write(body)
}

func (f *fakeKeygen) client(t testing.TB, mods ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		BaseURL: f.srv.URL, Account: acct, LicenseKey: testKey, PublicKey: f.s.edHex(),
		RSAPublicKey: pemOf(t, &f.s.rsa.PublicKey), ECDSAPublicKey: pemOf(t, &f.s.ecdsa.PublicKey),
		Now: func() time.Time { return t0.Add(10 * time.Second) }, HTTPClient: f.srv.Client(),
	}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/vnd.api+json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, title, detail string) {
	writeJSON(w, status, map[string]any{"meta": map[string]any{"id": "req-123"}, "errors": []any{
		map[string]any{"title": title, "detail": detail, "code": code, "source": map[string]any{"pointer": "/data"}},
	}})
}

// readBody decodes a request body into a generic map.
func readBody(t testing.TB, r *http.Request) map[string]any {
	var m map[string]any
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(r.Body)
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Errorf("request body %q: %v", buf.String(), err)
	}
	return m
}

func stdB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
