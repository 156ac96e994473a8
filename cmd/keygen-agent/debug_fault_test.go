package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// TestDebugFault drives a running dev server's faults the way an
// integrator would, without Go: set, show, a request seeing the fault,
// clear.
func TestDebugFault(t *testing.T) {
	srv, err := devserver.New(devserver.Options{CullInterval: -1, DisableRateLimit: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	base := []string{"debug", "fault", "--api-url", srv.URL(), "--account", srv.AccountID(), "--admin-token", srv.AdminToken()}
	do := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		c := run(context.Background(), append(append([]string{}, base...), args...), strings.NewReader(""), &out, &errb)
		return c, out.String(), errb.String()
	}
	if c, out, errs := do("set", "429", "route=GET /me"); c != exitOK || !strings.Contains(out, "429") {
		t.Fatalf("set: %d %q %q", c, out, errs)
	}
	if c, out, _ := do("show"); c != exitOK || !strings.Contains(out, "route=GET /me") {
		t.Fatalf("show: %d %q", c, out)
	}
	res, err := http.Get(srv.URL() + "/v1/accounts/" + srv.AccountID() + "/me")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 429 {
		t.Fatalf("GET /me under the 429 fault: %d", res.StatusCode)
	}
	if c, out, _ := do("clear"); c != exitOK || !strings.Contains(out, "no faults") {
		t.Fatalf("clear: %d %q", c, out)
	}
	if c, _, _ := do("set", "explode"); c != exitUsage {
		t.Fatalf("bad spec: exit %d", c)
	}
	var out, errb bytes.Buffer
	if c := run(context.Background(), []string{"debug", "fault", "--api-url", srv.URL(), "--account", srv.AccountID(), "--admin-token", "admin-nope", "show"}, strings.NewReader(""), &out, &errb); c != exitFailure {
		t.Fatalf("wrong token: exit %d", c)
	}
	if c := run(context.Background(), []string{"debug", "fault", "show"}, strings.NewReader(""), &out, &errb); c != exitUsage {
		t.Fatalf("no target: exit %d", c)
	}
}
