package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
)

// TestDevserverVerb runs `keygen-agent devserver` in-process, parses its
// single JSON line and drives activate → spawn → limit → kill → check-out
// over real HTTP, verifying every response signature with raw ed25519.
func TestDevserverVerb(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	stderr := &agenttest.SyncBuffer{}
	exit := make(chan int, 1)
	go func() {
		code := run(ctx, []string{"devserver", "--max-processes", "2", "--heartbeat-duration", "120", "--leasing", "PER_MACHINE"}, strings.NewReader(""), pw, stderr)
		pw.Close()
		exit <- code
	}()
	rd := bufio.NewReader(pr)
	lineCh := make(chan string, 1)
	go func() {
		l, _ := rd.ReadString('\n')
		lineCh <- l
		_, _ = io.Copy(io.Discard, rd)
	}()
	var line string
	select {
	case line = <-lineCh:
	case <-time.After(30 * time.Second):
		t.Fatalf("no ready line; stderr: %s", stderr.String())
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	for _, k := range []string{"api_url", "account", "product", "policy", "license_id", "license_key", "license_token", "public_key", "admin_token"} {
		if s, _ := info[k].(string); s == "" {
			t.Fatalf("ready line lacks %s: %s", k, line)
		}
	}
	pub, err := hex.DecodeString(info["public_key"].(string))
	if err != nil || len(pub) != ed25519.PublicKeySize {
		t.Fatalf("public_key %v", info["public_key"])
	}
	base := info["api_url"].(string) + "/v1/accounts/" + info["account"].(string)
	// The default demo policy is TOKEN (Keygen's default): speak with the printed license token.
	tok, licID := info["license_token"].(string), info["license_id"].(string)

	call := func(method, path string, body any) (int, map[string]any, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", "application/vnd.api+json")
		req.Header.Set("Content-Type", "application/vnd.api+json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		sum := sha256.Sum256(raw)
		digest := "sha-256=" + base64.StdEncoding.EncodeToString(sum[:])
		if res.Header.Get("Digest") != digest {
			t.Fatalf("%s %s: digest mismatch", method, path)
		}
		sigHdr := res.Header.Get("Keygen-Signature")
		i := strings.Index(sigHdr, `signature="`)
		if i < 0 {
			t.Fatalf("%s %s: no signature: %q", method, path, sigHdr)
		}
		sigB64 := sigHdr[i+len(`signature="`):]
		sigB64 = sigB64[:strings.IndexByte(sigB64, '"')]
		sig, _ := base64.StdEncoding.DecodeString(sigB64)
		u, _ := url.Parse(base + path)
		msg := "(request-target): " + strings.ToLower(method) + " " + u.RequestURI() + "\nhost: " + u.Hostname() +
			"\ndate: " + res.Header.Get("Date") + "\ndigest: " + digest
		if !ed25519.Verify(pub, []byte(msg), sig) {
			t.Fatalf("%s %s: bad signature", method, path)
		}
		var doc map[string]any
		if len(raw) > 0 && strings.Contains(res.Header.Get("Content-Type"), "json") {
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
		}
		return res.StatusCode, doc, raw
	}
	id := func(doc map[string]any) string {
		d, _ := doc["data"].(map[string]any)
		s, _ := d["id"].(string)
		return s
	}
	code := func(doc map[string]any) string {
		errs, _ := doc["errors"].([]any)
		if len(errs) == 0 {
			return ""
		}
		s, _ := errs[0].(map[string]any)["code"].(string)
		return s
	}

	st, doc, raw := call("POST", "/machines", map[string]any{"data": map[string]any{"type": "machines",
		"attributes":    map[string]any{"fingerprint": "verb-fp", "platform": "linux/amd64"},
		"relationships": map[string]any{"license": map[string]any{"data": map[string]any{"type": "licenses", "id": licID}}}}})
	if st != 201 {
		t.Fatalf("activate: %d %s", st, raw)
	}
	mid := id(doc)
	spawn := func(pid string) (int, map[string]any) {
		st, doc, _ := call("POST", "/processes", map[string]any{"data": map[string]any{"type": "processes",
			"attributes":    map[string]any{"pid": pid},
			"relationships": map[string]any{"machine": map[string]any{"data": map[string]any{"type": "machines", "id": mid}}}}})
		return st, doc
	}
	st, p1 := spawn("1")
	if st != 201 {
		t.Fatalf("spawn 1: %d", st)
	}
	if st, _ := spawn("2"); st != 201 {
		t.Fatalf("spawn 2: %d", st)
	}
	if st, doc := spawn("3"); st != 422 || code(doc) != "MACHINE_PROCESS_LIMIT_EXCEEDED" {
		t.Fatalf("limit: %d %v", st, doc)
	}
	if st, _, _ := call("DELETE", "/processes/"+id(p1), nil); st != 204 {
		t.Fatalf("kill: %d", st)
	}
	if st, _ := spawn("3"); st != 201 {
		t.Fatalf("spawn after kill: %d", st)
	}
	st, doc, raw = call("POST", "/machines/"+mid+"/actions/check-out", map[string]any{"meta": map[string]any{"encrypt": true, "include": []string{"license"}}})
	if st != 200 {
		t.Fatalf("check-out: %d %s", st, raw)
	}
	attrs := doc["data"].(map[string]any)["attributes"].(map[string]any)
	if cert, _ := attrs["certificate"].(string); !strings.HasPrefix(cert, "-----BEGIN MACHINE FILE-----\n") || attrs["algorithm"] != "aes-256-gcm+ed25519" {
		t.Fatalf("certificate: %v", attrs)
	}

	cancel()
	select {
	case c := <-exit:
		if c != exitOK {
			t.Fatalf("exit %d; stderr: %s", c, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("devserver did not stop")
	}
	if logs := stderr.String(); strings.Contains(logs, info["license_key"].(string)) || strings.Contains(logs, tok) || strings.Contains(logs, info["admin_token"].(string)) {
		t.Errorf("secret in logs: %s", logs)
	}
}

func TestDevserverVerbBadFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if c := run(context.Background(), []string{"devserver", "--heartbeat-duration", "5"}, strings.NewReader(""), &out, &errb); c != exitUsage {
		t.Errorf("exit %d, want %d", c, exitUsage)
	}
	if out.Len() != 0 {
		t.Errorf("stdout: %q", out.String())
	}
}

func TestDevserverVerbBadAuthzAndFaultFlags(t *testing.T) {
	for _, args := range [][]string{
		{"devserver", "--fault", "explode"},
		{"devserver", "--fault", "latency=soon"},
		{"devserver", "--permissions", "policy.read,nope"},
		{"devserver", "--auth-strategy", "PASSWORD"},
	} {
		var out, errb bytes.Buffer
		if c := run(context.Background(), args, strings.NewReader(""), &out, &errb); c != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, c, exitUsage, errb.String())
		}
		if out.Len() != 0 {
			t.Errorf("%v: stdout: %q", args, out.String())
		}
	}
}
