package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestDevFaultOfflinePath is the README's "Testing your app" walk-through:
// dev --fault applies faults once the agent is ready; `debug fault set
// refuse` sends the app down its offline path (license.use queued offline),
// `debug fault clear` brings Keygen back.
func TestDevFaultOfflinePath(t *testing.T) {
	useNoService(t)
	info := startDevArgs(t, t.TempDir(), "--max-uses", "3", "--fault", "429", "--fault", "route=GET /me")
	res, err := http.Get(info["api_url"] + "/v1/accounts/" + info["account"] + "/me")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 429 {
		t.Fatalf("GET /me under dev --fault 429 route=GET /me: %d", res.StatusCode)
	}
	cli := func(args ...string) (int, string) {
		t.Helper()
		var out, errb bytes.Buffer
		c := run(context.Background(), args, strings.NewReader(""), &out, &errb)
		return c, out.String() + errb.String()
	}
	fault := func(args ...string) {
		t.Helper()
		base := []string{"debug", "fault", "--api-url", info["api_url"], "--account", info["account"], "--admin-token", info["admin_token"]}
		if c, out := cli(append(base, args...)...); c != exitOK {
			t.Fatalf("debug fault %v: %d %s", args, c, out)
		}
	}
	use := func(count int) map[string]any {
		t.Helper()
		c, out := cli("debug", "--socket", info["socket"], "call", "license.use", `{"count":`+itoaTest(count)+`}`)
		var r map[string]any
		if i := strings.Index(out, "{"); i >= 0 {
			_ = json.Unmarshal([]byte(out[i:strings.LastIndex(out, "}")+1]), &r)
		}
		if c != exitOK && r == nil {
			r = map[string]any{"exit": c, "out": out}
		}
		return r
	}
	if r := use(1); r["uses"] != 1.0 || r["offline"] != false {
		t.Fatalf("online use: %v", r)
	}
	fault("set", "refuse")
	if r := use(1); r["uses"] != 2.0 || r["offline"] != true {
		t.Fatalf("use with Keygen refused: %v", r)
	}
	if _, out := cli("debug", "--socket", info["socket"], "call", "license.use", `{"count":2}`); !strings.Contains(out, "USES_EXCEEDED") {
		t.Fatalf("offline use past --max-uses 3: %s", out)
	}
	fault("clear")
}

func itoaTest(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestDevBadFaultFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if c := run(context.Background(), []string{"dev", "--fault", "explode"}, strings.NewReader(""), &out, &errb); c != exitUsage {
		t.Fatalf("dev --fault explode: exit %d, %s", c, errb.String())
	}
}
