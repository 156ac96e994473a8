package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	inspKey = "ABCD-1234-EFGH-5678-IJKL"
	inspFP  = "fingerprint-1"
)

var inspSeed = sha256.Sum256([]byte("inspect test key"))

// writeInspectCert writes a Keygen-style certificate and returns its path.
func writeInspectCert(t *testing.T, kind, alg, payload string) string {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(inspSeed[:])
	b64 := base64.StdEncoding.EncodeToString
	enc := b64([]byte(payload))
	if strings.HasPrefix(alg, "aes-256-gcm+") {
		secret := inspKey
		if kind == "machine" {
			secret += inspFP
		}
		key := sha256.Sum256([]byte(secret))
		block, _ := aes.NewCipher(key[:])
		gcm, _ := cipher.NewGCM(block)
		iv := []byte("abcdefghijkl")
		sealed := gcm.Seal(nil, iv, []byte(payload), nil)
		enc = b64(sealed[:len(sealed)-16]) + "." + b64(iv) + "." + b64(sealed[len(sealed)-16:])
	}
	sig := b64(ed25519.Sign(priv, []byte(kind+"/"+enc)))
	env, _ := json.Marshal(map[string]string{"enc": enc, "sig": sig, "alg": alg})
	body := b64(env)
	var b strings.Builder
	label := strings.ToUpper(kind) + " FILE"
	b.WriteString("-----BEGIN " + label + "-----\n")
	for len(body) > 60 {
		b.WriteString(body[:60] + "\n")
		body = body[60:]
	}
	b.WriteString(body + "\n-----END " + label + "-----\n")
	p := filepath.Join(t.TempDir(), kind+".lic")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const inspectMachinePayload = `{"data":{"id":"m-1","type":"machines","attributes":{"fingerprint":"fingerprint-1","hostname":"box","platform":"linux/amd64"},
"relationships":{"license":{"data":{"type":"licenses","id":"l-1"}}}},
"included":[{"id":"l-1","type":"licenses","attributes":{"name":"Pro","key":"ABCD-1234-EFGH-5678-IJKL","status":"ACTIVE","expiry":null,"maxProcesses":5}},
{"id":"e-1","type":"entitlements","attributes":{"code":"FEATURE_A","name":"A"}}],
"meta":{"issued":"2026-06-01T12:00:00.000Z","expiry":"2026-07-01T12:00:00.000Z","ttl":2629746}}`

func runInspectCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	t.Setenv("KEYGEN_PUBLIC_KEY", "")
	t.Setenv("KEYGEN_LICENSE_KEY", "")
	var out, errb bytes.Buffer
	code := run(t.Context(), append([]string{"inspect"}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestInspectVerdicts(t *testing.T) {
	pub := hex.EncodeToString(ed25519.NewKeyFromSeed(inspSeed[:]).Public().(ed25519.PublicKey))
	other := strings.Repeat("0f", 32)
	machine := writeInspectCert(t, "machine", "aes-256-gcm+ed25519", inspectMachinePayload)
	plain := writeInspectCert(t, "machine", "base64+ed25519", inspectMachinePayload)
	rsa := writeInspectCert(t, "machine", "base64+rsa-sha256", inspectMachinePayload)
	garbage := filepath.Join(t.TempDir(), "garbage.lic")
	_ = os.WriteFile(garbage, []byte("not a license file"), 0o600)
	inWindow := "--at=2026-06-10T00:00:00Z"

	cases := []struct {
		name    string
		args    []string
		verdict string
		code    int
	}{
		{"valid encrypted", []string{"--public-key", pub, "--license-key", inspKey, "--fingerprint", inspFP, inWindow, machine}, "valid", 0},
		{"valid unencrypted without secrets", []string{"--public-key", pub, inWindow, plain}, "valid", 0},
		{"wrong key", []string{"--public-key", other, "--license-key", inspKey, "--fingerprint", inspFP, inWindow, machine}, "not_genuine", 11},
		{"wrong fingerprint", []string{"--public-key", pub, "--license-key", inspKey, "--fingerprint", "other", inWindow, machine}, "decrypt_failed", 13},
		{"expired", []string{"--public-key", pub, "--at=2026-08-01T00:00:00Z", plain}, "expired", 14},
		{"clock skew", []string{"--public-key", pub, "--at=2026-05-01T00:00:00Z", plain}, "clock_skew", 15},
		{"unsupported", []string{"--public-key", pub, inWindow, rsa}, "unsupported", 12},
		{"malformed", []string{"--public-key", pub, garbage}, "malformed", 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := runInspectCmd(t, append([]string{"--json"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			var rep map[string]any
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("output %q: %v", out, err)
			}
			if rep["verdict"] != tc.verdict {
				t.Errorf("verdict %v, want %s (%v)", rep["verdict"], tc.verdict, rep["detail"])
			}
			if strings.Contains(out, inspKey) {
				t.Errorf("JSON output contains the full license key")
			}
			if tc.verdict == "valid" {
				lic := rep["license"].(map[string]any)
				if rep["kind"] != "machine" || lic["id"] != "l-1" || lic["key_redacted"] != "ABCD...IJKL" || rep["machine"].(map[string]any)["fingerprint"] != inspFP ||
					rep["signer"].(map[string]any)["key_id"] != pub || rep["entitlements"].([]any)[0] != "FEATURE_A" {
					t.Errorf("report %s", out)
				}
			}
			if tc.verdict == "expired" && rep["expiry"] != "2026-07-01T12:00:00Z" {
				t.Errorf("expired report lacks content: %s", out)
			}
		})
	}
}

func TestInspectHumanAndUsage(t *testing.T) {
	pub := hex.EncodeToString(ed25519.NewKeyFromSeed(inspSeed[:]).Public().(ed25519.PublicKey))
	machine := writeInspectCert(t, "machine", "aes-256-gcm+ed25519", inspectMachinePayload)
	code, out, _ := runInspectCmd(t, "--public-key", pub, "--license-key", inspKey, "--fingerprint", inspFP, "--at=2026-06-10T00:00:00Z", machine)
	if code != 0 || !strings.Contains(out, "VALID") || !strings.Contains(out, "(21d12h from now)") || !strings.Contains(out, "signed by:") || !strings.Contains(out, "FEATURE_A") || strings.Contains(out, inspKey) {
		t.Errorf("human output (exit %d):\n%s", code, out)
	}
	if code, _, _ := runInspectCmd(t, "--public-key", pub); code != exitUsage {
		t.Errorf("no file: exit %d", code)
	}
	if code, _, _ := runInspectCmd(t, machine); code != exitUsage {
		t.Errorf("no key: exit %d", code)
	}
	if code, _, _ := runInspectCmd(t, "--public-key", pub, filepath.Join(t.TempDir(), "missing.lic")); code != exitFailure {
		t.Errorf("missing file: exit %d", code)
	}
	code, _, stderr := runInspectCmd(t, "--help")
	if code != exitOK || !strings.Contains(stderr, "clock_skew") || !strings.Contains(stderr, "decrypt_failed") || !strings.Contains(stderr, "15") {
		t.Errorf("help (exit %d): %s", code, stderr)
	}
	// Key from a PEM file path, license from stdin.
	var outb, errb bytes.Buffer
	data, _ := os.ReadFile(writeInspectCert(t, "license", "base64+ed25519", strings.Replace(strings.Replace(inspectMachinePayload, `"type":"machines"`, `"type":"licenses"`, 1), `"id":"m-1"`, `"id":"l-1"`, 1)))
	t.Setenv("KEYGEN_PUBLIC_KEY", pub)
	code = run(t.Context(), []string{"inspect", "--json", "--at=2026-06-10T00:00:00Z", "-"}, bytes.NewReader(data), &outb, &errb)
	if code != 0 || !strings.Contains(outb.String(), `"kind": "license"`) {
		t.Errorf("stdin with env key: exit %d %s %s", code, outb.String(), errb.String())
	}
}
