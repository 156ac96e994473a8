//go:build unix

package ipc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// TestExamples runs examples/python and examples/node against a real
// socket: a fake lease.acquire hands out entitlements, then the lease is
// revoked by notification; a second run meets PROCESS_LIMIT_EXCEEDED.
func TestExamples(t *testing.T) {
	for _, ex := range []struct{ interp, script string }{
		{"python3", "../examples/python/keygen_lease.py"},
		{"node", "../examples/node/keygen_lease.js"},
	} {
		t.Run(ex.interp, func(t *testing.T) {
			bin, err := exec.LookPath(ex.interp)
			if err != nil {
				t.Skipf("%s not installed", ex.interp)
			}
			var full atomic.Bool
			conns := make(chan *Conn, 4)
			mux := NewMux()
			mux.Register(MethodAcquire, PermAny, func(ctx context.Context, p json.RawMessage) (any, error) {
				if full.Load() {
					return nil, &Error{Code: CodeProcessLimitExceeded, Message: "all 2 processes are in use", Data: map[string]any{"limit": 2, "count": 2}}
				}
				var ap AcquireParams
				if err := json.Unmarshal(p, &ap); err != nil || ap.App != "ex-app" {
					return nil, Errorf(CodeInvalidRequest, "bad params %s", p)
				}
				return AcquireResult{LeaseID: "lease-1", ProcessID: "proc-1", HeartbeatInterval: 600, Entitlements: []string{"PRO", "EXPORT"}}, nil
			})
			_, path := testServer(t, ServerConfig{Mux: mux, OnConnect: func(c *Conn) { conns <- c }})

			cmd := exec.CommandContext(t.Context(), bin, ex.script, "--socket", path, "--app", "ex-app")
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			var lines []string
			for sc.Scan() {
				lines = append(lines, sc.Text())
				if strings.HasPrefix(sc.Text(), "entitlements:") {
					break
				}
			}
			if len(lines) != 2 || lines[0] != "acquired lease-1" || lines[1] != "entitlements: PRO, EXPORT" {
				t.Fatalf("stdout %q, stderr %s", lines, stderr.String())
			}
			c := within(t, conns, "example connection")
			if err := c.Notify(NotifyLicenseChanged, map[string]any{"valid": true}); err != nil {
				t.Fatal(err)
			}
			if err := c.Notify(NotifyLeaseRevoked, LeaseRevoked{LeaseID: "lease-1", Reason: "suspended", Code: CodeLicenseInvalid}); err != nil {
				t.Fatal(err)
			}
			for sc.Scan() {
				lines = append(lines, sc.Text())
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 5 {
				t.Fatalf("exit %v, stdout %q, stderr %s", err, lines, stderr.String())
			}
			if got := strings.Join(lines[2:], "|"); got != "license changed: valid=True|revoked: suspended (LICENSE_INVALID)" &&
				got != "license changed: valid=true|revoked: suspended (LICENSE_INVALID)" {
				t.Errorf("after acquire: %q", got)
			}

			full.Store(true)
			cmd = exec.CommandContext(t.Context(), bin, ex.script, "--socket", path, "--app", "ex-app")
			b, err := cmd.CombinedOutput()
			if !errors.As(err, &ee) || ee.ExitCode() != 5 || !strings.Contains(string(b), "no free seat: 2 of 2 in use") {
				t.Fatalf("limit: %v %s", err, b)
			}
		})
	}
}
