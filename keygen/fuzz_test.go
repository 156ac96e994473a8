package keygen

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var updateSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz seed corpora")

var certSentinels = []error{ErrCertMalformed, ErrCertNotGenuine, ErrCertUnsupported, ErrCertDecrypt, ErrCertExpired, ErrCertClockSkew}

// checkCertOutcome asserts the "typed error, never a panic" contract.
func checkCertOutcome(t *testing.T, ds *Dataset, err error) {
	t.Helper()
	if err == nil {
		if ds == nil {
			t.Fatal("nil dataset without error")
		}
		return
	}
	var ce *CertificateError
	if !errors.As(err, &ce) {
		t.Fatalf("untyped error %T: %v", err, err)
	}
	n := 0
	for _, s := range certSentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("error matches %d verdicts: %v", n, err)
	}
	withData := errors.Is(err, ErrCertExpired) || errors.Is(err, ErrCertClockSkew)
	if withData != (ds != nil) {
		t.Fatalf("dataset %v with %v", ds != nil, err)
	}
}

type certSeed struct {
	cert       []byte
	key, fp    string
	payload    []byte
	licenseKey string
}

func certSeeds(t testing.TB) []certSeed {
	s := testSigners(t)
	exp := t0.Add(24 * time.Hour)
	mpl := certPayload(KindMachine, t0, &exp, ptr(86400))
	lpl := certPayload(KindLicense, t0, nil, nil)
	machine := makeCert(t, s, certSpec{kind: KindMachine, alg: "aes-256-gcm+ed25519", payload: mpl, secret: testKey + testFP})
	return []certSeed{
		{cert: machine, key: testKey, fp: testFP, payload: mpl},
		{cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "base64+ed25519", payload: lpl}), payload: lpl},
		{cert: makeCert(t, s, certSpec{kind: KindLicense, alg: "aes-256-gcm+ed25519", payload: lpl, secret: testKey}), key: testKey, payload: []byte(`{"data":null,"meta":{}}`)},
		{cert: []byte(strings.ReplaceAll(string(machine), "\n", "\r\n")), key: testKey, fp: "wrong", payload: []byte(`{"data":{"id":"x","type":"machines","attributes":{}},"meta":{"issued":"2026-06-01T12:00:00Z"}}`)},
		{cert: []byte("-----BEGIN MACHINE FILE-----\neyJlbmMiOiIiLCJzaWciOiIiLCJhbGciOiIifQ==\n-----END MACHINE FILE-----\n"), payload: []byte("[]")},
		{cert: []byte("garbage"), payload: []byte("null")},
	}
}

func FuzzParseCertificate(f *testing.F) {
	for _, s := range certSeeds(f) {
		f.Add(s.cert)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCertificate(data)
		if err != nil {
			if !errors.Is(err, ErrCertMalformed) {
				t.Fatalf("parse error not malformed: %v", err)
			}
			return
		}
		if c.Enc == "" || c.Sig == "" || c.Alg == "" || (c.Kind != KindLicense && c.Kind != KindMachine) {
			t.Fatalf("accepted incomplete certificate %+v", c)
		}
		_ = c.Verify(testSigners(t).publicKeys())
	})
}

// FuzzOpenCertificate drives the whole pipeline on arbitrary files.
func FuzzOpenCertificate(f *testing.F) {
	for _, s := range certSeeds(f) {
		f.Add(s.cert, s.key, s.fp)
	}
	keys := testSigners(f).publicKeys()
	f.Fuzz(func(t *testing.T, data []byte, licenseKey, fingerprint string) {
		ds, err := OpenCertificate(data, OpenOptions{Keys: keys, LicenseKey: licenseKey, Fingerprint: fingerprint, Now: t0.Add(time.Hour)})
		checkCertOutcome(t, ds, err)
	})
}

// FuzzOpenSignedPayload signs arbitrary payloads, so the fuzzer reaches
// decryption and JSON:API decoding behind a genuine signature.
func FuzzOpenSignedPayload(f *testing.F) {
	for _, s := range certSeeds(f) {
		f.Add(s.payload, true, false)
		f.Add(s.payload, false, true)
	}
	// Valid payloads with one field wrong, so mutations start deep in the
	// dataset checks instead of at JSON syntax.
	for _, m := range oneFieldWrong() {
		f.Add(m.payload, m.machine, m.machine)
		f.Add(m.payload, !m.machine, m.machine)
	}
	sg := testSigners(f)
	keys := sg.publicKeys()
	f.Fuzz(func(t *testing.T, payload []byte, encrypt, machine bool) {
		spec := certSpec{kind: KindLicense, alg: "base64+ed25519", payload: payload, secret: testKey}
		if machine {
			spec.kind, spec.secret = KindMachine, testKey+testFP
		}
		if encrypt {
			spec.alg = "aes-256-gcm+ed25519"
		}
		ds, err := OpenCertificate(makeCert(t, sg, spec), OpenOptions{Keys: keys, LicenseKey: testKey, Fingerprint: testFP, Now: t0})
		checkCertOutcome(t, ds, err)
		if err != nil && (errors.Is(err, ErrCertNotGenuine) || errors.Is(err, ErrCertDecrypt) || errors.Is(err, ErrCertUnsupported)) {
			t.Fatalf("genuine payload rejected as %v", err)
		}
	})
}

type wrongSeed struct {
	payload []byte
	machine bool
}

// oneFieldWrong derives payloads from valid machine and license file
// payloads with exactly one field changed.
func oneFieldWrong() []wrongSeed {
	exp := t0.Add(24 * time.Hour)
	past := t0.Add(-time.Hour)
	edits := []func(doc map[string]any){
		func(doc map[string]any) { doc["meta"].(map[string]any)["issued"] = "2099-01-01T00:00:00.000Z" },
		func(doc map[string]any) { doc["meta"].(map[string]any)["expiry"] = past.Format(time.RFC3339) },
		func(doc map[string]any) { doc["meta"].(map[string]any)["ttl"] = -1 },
		func(doc map[string]any) { doc["meta"].(map[string]any)["issued"] = 42 },
		func(doc map[string]any) { delete(doc, "meta") },
		func(doc map[string]any) { doc["data"].(map[string]any)["type"] = "policies" },
		func(doc map[string]any) { doc["data"].(map[string]any)["id"] = "" },
		func(doc map[string]any) { doc["data"].(map[string]any)["attributes"] = nil },
		func(doc map[string]any) {
			doc["data"].(map[string]any)["attributes"].(map[string]any)["fingerprint"] = "someone-else"
		},
		func(doc map[string]any) {
			doc["data"].(map[string]any)["attributes"].(map[string]any)["expiry"] = past.Format(time.RFC3339)
		},
		func(doc map[string]any) {
			doc["data"].(map[string]any)["attributes"].(map[string]any)["maxProcesses"] = "five"
		},
		func(doc map[string]any) { doc["data"].(map[string]any)["relationships"] = []any{1} },
		func(doc map[string]any) {
			doc["included"] = []any{map[string]any{"type": "entitlements", "id": "e", "attributes": map[string]any{"code": 7}}}
		},
		func(doc map[string]any) { doc["included"] = map[string]any{} },
		func(doc map[string]any) { doc["data"] = []any{doc["data"]} },
	}
	var out []wrongSeed
	for _, machine := range []bool{true, false} {
		kind := KindLicense
		if machine {
			kind = KindMachine
		}
		for _, edit := range edits {
			var doc map[string]any
			if err := json.Unmarshal(certPayload(kind, t0, &exp, ptr(86400)), &doc); err != nil {
				panic(err)
			}
			func() {
				defer func() { _ = recover() }() // an edit that does not apply to this kind
				edit(doc)
			}()
			b, _ := json.Marshal(doc)
			out = append(out, wrongSeed{payload: b, machine: machine})
		}
	}
	return out
}

// FuzzDecodeResponse feeds arbitrary bodies to every JSON:API decoder.
func FuzzDecodeResponse(f *testing.F) {
	seeds := []string{
		`{"meta":{"id":"r"},"errors":[{"title":"Unprocessable resource","detail":"x","code":"MACHINE_PROCESS_LIMIT_EXCEEDED","source":{"pointer":"/data"}}]}`,
		`{"errors":[]}`, `{"errors":null}`, `{"errors":[{"code":5}]}`, `<html>`, ``, `null`,
		`{"data":{"id":"l","type":"licenses","attributes":{"expiry":null,"maxProcesses":5},"relationships":{"policy":{"data":{"type":"policies","id":"p"}}}}}`,
		`{"data":[{"id":"m","type":"machines","attributes":{"cores":8},"relationships":{"license":{"data":null}}}]}`,
		`{"data":null,"meta":{"valid":false,"code":"NOT_FOUND","nonce":42,"ts":"2026-06-01T12:00:00Z"}}`,
		`{"data":{"id":"p","type":"processes","attributes":{"pid":"1","interval":600}}}`,
		`{"data":{"id":"x","type":"machine-files","attributes":{"certificate":"c","ttl":null,"issued":"2026-06-01T12:00:00Z"}}}`,
	}
	for i, s := range seeds {
		f.Add(400+i, []byte(s), `keyid="a", algorithm="ed25519", signature="AAAA"`)
	}
	f.Fuzz(func(t *testing.T, status int, body []byte, sigHeader string) {
		if e := decodeAPIError(status, body, ""); e == nil || e.Status != status || e.Error() == "" {
			t.Fatalf("decodeAPIError = %#v", e)
		}
		_ = parseSignatureHeader(sigHeader)
		d, err := decodeDocument(body)
		if err != nil {
			if !errors.Is(err, ErrMalformedResponse) {
				t.Fatalf("untyped decode error %v", err)
			}
			return
		}
		check := func(err error) {
			if err != nil && !errors.Is(err, ErrMalformedResponse) && !errors.Is(err, ErrNonceMismatch) {
				t.Fatalf("untyped error %v", err)
			}
		}
		conv := map[string]func(*resource) error{
			"licenses":     func(r *resource) error { _, err := toLicense(r); return err },
			"machines":     func(r *resource) error { _, err := toMachine(r); return err },
			"processes":    func(r *resource) error { _, err := toProcess(r); return err },
			"components":   func(r *resource) error { _, err := toComponent(r); return err },
			"entitlements": func(r *resource) error { _, err := toEntitlement(r); return err },
			"policies":     func(r *resource) error { _, err := toPolicy(r); return err },
		}
		for typ, fn := range conv {
			if r, err := d.one(typ); err == nil {
				check(fn(r))
			} else {
				check(err)
			}
			rs, err := d.many(typ)
			check(err)
			for i := range rs {
				check(fn(&rs[i]))
			}
		}
		_, err = decodeValidation(d, 42)
		check(err)
		_, err = decodeDataset(KindMachine, body)
		_, err2 := decodeDataset(KindLicense, body)
		_, _ = err, err2
	})
}

func FuzzVerifyLicenseKey(f *testing.F) {
	s := testSigners(f)
	signed := "key/" + "eyJhIjoxfQ=="
	f.Add(signed + "." + encodeURL(s.sign(f, "ed25519", []byte(signed))))
	f.Add("ABCD-1234")
	f.Add("key/.")
	keys := s.publicKeys()
	f.Fuzz(func(t *testing.T, key string) {
		data, err := VerifyLicenseKey(key, keys)
		if err == nil && len(data) == 0 {
			t.Fatal("no data without error")
		}
		var ce *CertificateError
		if err != nil && !errors.As(err, &ce) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func encodeURL(b []byte) string {
	return strings.NewReplacer("+", "-", "/", "_").Replace(stdB64(b))
}

// TestFuzzSeedCorpus keeps testdata/fuzz in sync with the seed tables:
// run with -update-fuzz-seeds to rewrite it.
func TestFuzzSeedCorpus(t *testing.T) {
	files := map[string][]string{}
	for i, s := range certSeeds(t) {
		files[fmt.Sprintf("FuzzParseCertificate/seed-%d", i)] = []string{bytesLit(s.cert)}
		files[fmt.Sprintf("FuzzOpenCertificate/seed-%d", i)] = []string{bytesLit(s.cert), "string(" + strconv.Quote(s.key) + ")", "string(" + strconv.Quote(s.fp) + ")"}
		files[fmt.Sprintf("FuzzOpenSignedPayload/seed-%d", i)] = []string{bytesLit(s.payload), "bool(true)", fmt.Sprintf("bool(%v)", i%2 == 0)}
	}
	files["FuzzDecodeResponse/seed-error"] = []string{"int(422)", bytesLit([]byte(`{"meta":{"id":"r"},"errors":[{"title":"t","detail":"d","code":"PID_TAKEN","source":{"parameter":"pid"}}]}`)), `string("signature=\"x\"")`}
	files["FuzzDecodeResponse/seed-validation"] = []string{"int(200)", bytesLit([]byte(`{"data":{"id":"l","type":"licenses","attributes":{}},"meta":{"valid":true,"code":"VALID","nonce":42}}`)), `string("")`}
	files["FuzzVerifyLicenseKey/seed-unsigned"] = []string{`string("key/eyJhIjoxfQ==.AAAA")`}
	for name, lines := range files {
		path := filepath.Join("testdata", "fuzz", name)
		want := "go test fuzz v1\n" + strings.Join(lines, "\n") + "\n"
		if *updateSeeds {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s out of date (run go test -run TestFuzzSeedCorpus -update-fuzz-seeds): %v", path, err)
		}
	}
}

func bytesLit(b []byte) string { return "[]byte(" + strconv.Quote(string(b)) + ")" }
