package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/fingerprint"
)

const fakeRoot = "../../fingerprint/testdata/server"

// fakeRootRaw are raw identifiers in the fake root; no output may hold them.
var fakeRootRaw = []string{"7f3c2a9e5b1d4e6f8a0b1c2d3e4f5a6b", "4c4c4544-0051-3910-8057-b7c04f4e4d32", "7X9QN32", "CNFCW0097B01TQ",
	"S3Z9NB0K123456X", "PHBT8123004K512A", "VIRTIO-DISK-7781", "WCC4N7ABCDEF", "USBSTICK0042", "ISCSILUN0099",
	"3c:ec:ef:12:34:56", "8c:8d:28:aa:bb:cc", "00:1b:21:de:ad:01", "a0:36:9f:11:22:33", "06:42:ac:11:00:02", "00:e0:4c:68:00:01",
	"container-identity-secret-0042"}

func runFP(t *testing.T, vars map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{ctx: context.Background(), args: args, stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}
	code = verbs["fingerprint"].run(e)
	return code, out.String(), errb.String()
}

func assertNoRawOutput(t *testing.T, what, s string) {
	t.Helper()
	for _, v := range fakeRootRaw {
		if strings.Contains(strings.ToLower(s), strings.ToLower(v)) {
			t.Errorf("%s contains raw value %q", what, v)
		}
	}
}

func TestFingerprintJSON(t *testing.T) {
	vars := map[string]string{"KEYGEN_PRODUCT": "prod-1"}
	code, out, errs := runFP(t, vars, "--json", "--root", fakeRoot)
	if code != exitOK {
		t.Fatalf("code %d, stderr %s", code, errs)
	}
	var doc struct {
		fingerprint.Result
		AppIDSource string `json:"app_id_source"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Fingerprint) != 64 || len(doc.Components) != 10 || doc.AppIDSource != "KEYGEN_PRODUCT" {
		t.Errorf("doc = %+v", doc)
	}
	assertNoRawOutput(t, "--json", out)
	_, again, _ := runFP(t, vars, "--json", "--root", fakeRoot)
	if again != out {
		t.Error("two runs differ")
	}
	// The app ID changes every fingerprint.
	_, other, _ := runFP(t, nil, "--json", "--root", fakeRoot, "--app-id", "other")
	if strings.Contains(other, doc.Fingerprint) {
		t.Error("--app-id did not change the fingerprint")
	}
}

func TestFingerprintExplainRecordedFile(t *testing.T) {
	_, out, _ := runFP(t, nil, "--json", "--root", fakeRoot)
	var cur fingerprint.Result
	json.Unmarshal([]byte(out), &cur)
	rec := append([]fingerprint.Component{}, cur.Components...)
	rec[0].Fingerprint = strings.Repeat("0", 64) // system UUID changed since activation
	rec = append(rec, fingerprint.Component{Name: "nic-3", Fingerprint: strings.Repeat("1", 64)})
	file := filepath.Join(t.TempDir(), "recorded.json")
	b, _ := json.Marshal(rec)
	os.WriteFile(file, b, 0o600)
	vars := map[string]string{fingerprint.DefaultIdentityEnv: "container-identity-secret-0042"}
	code, text, errs := runFP(t, vars, "--explain", "--root", fakeRoot, "--recorded", file)
	if code != exitOK {
		t.Fatalf("code %d: %s", code, errs)
	}
	for _, want := range []string{"environment KEYGEN_AGENT_MACHINE_ID", "STATUS", "changed", "missing", "9 of 10 current components recorded",
		"MATCH_MOST passes", "MATCH_ALL  fails", "disk:sdb", "USB-attached disk", "locally administered"} {
		if !strings.Contains(text, want) {
			t.Errorf("--explain output lacks %q:\n%s", want, text)
		}
	}
	assertNoRawOutput(t, "--explain text", text)
	_, js, _ := runFP(t, vars, "--explain", "--json", "--root", fakeRoot, "--recorded", file)
	var doc fingerprintOutput
	if err := json.Unmarshal([]byte(js), &doc); err != nil || doc.Comparison == nil ||
		doc.Comparison.Pass[fingerprint.MatchAll] || len(doc.Comparison.Changed) != 1 {
		t.Errorf("json comparison = %+v (%v)", doc.Comparison, err)
	}
	assertNoRawOutput(t, "--explain --json", js)
}

func TestFingerprintExplainCache(t *testing.T) {
	dir := t.TempDir()
	// No agent.db: not activated, and none is created.
	code, text, _ := runFP(t, nil, "--explain", "--root", fakeRoot, "--data-dir", dir)
	if code != exitOK || !strings.Contains(text, "no activation recorded") {
		t.Errorf("code %d:\n%s", code, text)
	}
	if _, err := os.Stat(filepath.Join(dir, "agent.db")); err == nil {
		t.Fatal("--explain created the cache")
	}
	_, out, _ := runFP(t, nil, "--json", "--root", fakeRoot)
	var cur fingerprint.Result
	json.Unmarshal([]byte(out), &cur)
	st, err := cache.Open(filepath.Join(dir, "agent.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := cache.MachineRecord{ID: "m1", Fingerprint: cur.Fingerprint}
	for _, c := range cur.Components {
		m.Components = append(m.Components, cache.ComponentRecord{Name: c.Name, Fingerprint: c.Fingerprint})
	}
	if err := st.PutMachine(m); err != nil {
		t.Fatal(err)
	}
	// The running agent holds the lock: a clear message, not a hang.
	code, text, errs := runFP(t, nil, "--explain", "--root", fakeRoot, "--data-dir", dir)
	if code != exitFailure || !strings.Contains(errs, "held by the running agent") || !strings.Contains(errs, "--recorded") ||
		!strings.Contains(text, "machine fingerprint") {
		t.Errorf("locked: code %d stderr %q", code, errs)
	}
	st.Close()
	code, text, errs = runFP(t, nil, "--explain", "--root", fakeRoot, "--data-dir", dir)
	if code != exitOK || !strings.Contains(text, "10 of 10 current components recorded") || !strings.Contains(text, "MATCH_ALL  passes") {
		t.Errorf("code %d stderr %s:\n%s", code, errs, text)
	}
	assertNoRawOutput(t, "--explain from cache", text)
}

func TestFingerprintNoMachineID(t *testing.T) {
	code, _, errs := runFP(t, nil, "--root", t.TempDir())
	if code != exitConfig || !strings.Contains(errs, "KEYGEN_AGENT_MACHINE_ID") {
		t.Errorf("code %d stderr %q", code, errs)
	}
	if code, _, _ := runFP(t, nil, "extra"); code != exitUsage {
		t.Errorf("positional argument: code %d", code)
	}
}

func TestResolveAppID(t *testing.T) {
	for _, tc := range []struct {
		flag string
		vars map[string]string
		id   string
		src  string
	}{
		{"f", map[string]string{"KEYGEN_AGENT_APP_ID": "a"}, "f", "--app-id"},
		{"", map[string]string{"KEYGEN_AGENT_APP_ID": "a", "KEYGEN_PRODUCT": "p"}, "a", "KEYGEN_AGENT_APP_ID"},
		{"", map[string]string{"KEYGEN_PRODUCT": "p", "KEYGEN_ACCOUNT": "c"}, "p", "KEYGEN_PRODUCT"},
		{"", map[string]string{"KEYGEN_ACCOUNT": "c"}, "c", "KEYGEN_ACCOUNT"},
		{"", nil, defaultAppID, "default"},
	} {
		id, src := resolveAppID(tc.flag, func(k string) string { return tc.vars[k] })
		if id != tc.id || src != tc.src {
			t.Errorf("%+v: got %q %q", tc, id, src)
		}
	}
}
