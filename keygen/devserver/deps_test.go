package devserver

import (
	"bytes"
	"go/parser"
	gotoken "go/token"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDeps: the dev server stays independent of the client it tests and
// of the agent.
func TestDeps(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(gotoken.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, "github.com/keygen-agent/keygen-agent") {
				t.Errorf("%s imports %s", f, p)
			}
		}
	}
}

// TestLogsRedactSecrets runs a flow with debug logging and checks that no
// license key or token reaches the log.
func TestLogsRedactSecrets(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newTestServer(t, Options{Logger: log, CullInterval: -1})
	d := demo(t, s, DemoOptions{})
	c := newClient(t, s, licenseAuth(d.License.Key))
	mid := c.activate(d.License.ID, "fp")
	c.spawn(mid, "1")
	c.do("GET", "/licenses/"+d.License.ID, nil)
	c.with(bearerAuth(s.AdminToken())).do("GET", "/licenses", nil)
	c.with(licenseAuth("wrong-key-123")).do("GET", "/me", nil)
	out := buf.String()
	if !strings.Contains(out, "route=") {
		t.Fatalf("no request logs: %s", out)
	}
	for _, secret := range []string{d.License.Key, s.AdminToken(), "wrong-key-123"} {
		if strings.Contains(out, secret) {
			t.Errorf("secret %q in logs", secret[:8])
		}
	}
}
