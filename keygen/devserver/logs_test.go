package devserver

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

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
