//go:build unix

package ipc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/leaseverify/leaseverifytest"
)

// TestExamplesVerify runs examples/python and examples/node with
// --public-key against a stub agent: genuine evidence for the example's own
// process verifies; a stub's answer and every tampered variant is refused
// with the right check (exit code 6). The examples implement the checks
// from docs/protocol.md alone.
func TestExamplesVerify(t *testing.T) {
	iss := leaseverifytest.New("acct", "fp-this-machine", time.Now().Add(-time.Minute))
	stub := leaseverifytest.New("stub", "fp-this-machine", time.Now().Add(-time.Minute))
	elsewhere := leaseverifytest.New("acct", "fp-another-machine", time.Now().Add(-time.Minute))
	var mode atomic.Value
	mux := NewMux()
	mux.Register(MethodAcquire, PermAny, func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p AcquireParams
		if err := json.Unmarshal(raw, &p); err != nil || !p.Confirm {
			return nil, Errorf(CodeInvalidRequest, "the example must ask for confirm: %s", raw)
		}
		peer, _ := PeerFromContext(ctx)
		self := strconv.Itoa(peer.PID) + "@" + strconv.FormatUint(peer.StartTime, 10)
		r := AcquireResult{LeaseID: "lease-1", ProcessID: "process-lease-1", HeartbeatInterval: 600, Entitlements: []string{"PRO"}}
		switch mode.Load().(string) {
		case "genuine":
			r.Evidence = iss.Evidence("lease-1", self, time.Now())
		case "offline":
			r.Evidence = iss.Evidence("lease-1", self, time.Now())
			r.Evidence.Status, r.Evidence.Process = "offline", nil
		case "stub-signed":
			r.Evidence = stub.Evidence("lease-1", self, time.Now())
		case "other-process":
			r.Evidence = iss.Evidence("lease-1", strconv.Itoa(peer.PID+1)+"@"+strconv.FormatUint(peer.StartTime, 10), time.Now())
		case "other-lease":
			r.Evidence = iss.Evidence("lease-2", self, time.Now())
		case "other-machine":
			r.Evidence = elsewhere.Evidence("lease-1", self, time.Now())
		case "tampered":
			r.Evidence = iss.Evidence("lease-1", self, time.Now())
			r.Evidence.Process.Body[len(r.Evidence.Process.Body)-3] ^= 1
		case "old":
			r.Evidence = iss.Evidence("lease-1", self, time.Now().Add(-3*time.Hour))
		}
		return r, nil
	})
	mux.Register(MethodRelease, PermAny, func(context.Context, json.RawMessage) (any, error) { return struct{}{}, nil })
	_, path := testServer(t, ServerConfig{Mux: mux})

	for _, ex := range []struct{ interp, script string }{
		{"python3", "../examples/python/keygen_lease.py"},
		{"node", "../examples/node/keygen_lease.js"},
	} {
		t.Run(ex.interp, func(t *testing.T) {
			bin, err := exec.LookPath(ex.interp)
			if err != nil {
				t.Skipf("%s not installed", ex.interp)
			}
			args := []string{ex.script, "--socket", path, "--app", "ex-app", "--public-key", iss.PublicKeyHex(),
				"--fingerprint", "fp-this-machine", "--max-age", "3600"}
			if ex.interp == "python3" {
				if out, err := exec.Command(bin, "-c", "import cryptography").CombinedOutput(); err != nil {
					if out2, err := exec.Command(bin, "-c", "import nacl").CombinedOutput(); err != nil {
						// The example must say so plainly.
						b, err := exec.Command(bin, args...).CombinedOutput()
						var ee *exec.ExitError
						if !errors.As(err, &ee) || ee.ExitCode() != 7 || !strings.Contains(string(b), "install the 'cryptography' package or PyNaCl") {
							t.Fatalf("without an Ed25519 library: %v %s", err, b)
						}
						t.Skipf("neither cryptography nor PyNaCl installed: %s %s", out, out2)
					}
				}
			}
			for _, tc := range []struct{ mode, want string }{
				{"stub", "lease refused: evidence"},
				{"stub-signed", "lease refused: machine_file"},
				{"other-process", "lease refused: process"},
				{"other-lease", "lease refused: lease"},
				{"other-machine", "lease refused: fingerprint"},
				{"tampered", "lease refused: digest"},
				{"old", "lease refused: date"},
			} {
				mode.Store(tc.mode)
				b, err := exec.CommandContext(t.Context(), bin, args...).CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 6 || !strings.Contains(string(b), tc.want) {
					t.Errorf("%s: %v, output %s", tc.mode, err, b)
				}
			}
			for _, tc := range []struct{ mode, want string }{
				{"genuine", "verified process-lease-1"},
				{"offline", "verified offline: machine file only"},
			} {
				mode.Store(tc.mode)
				cmd := exec.CommandContext(t.Context(), bin, args...)
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
					if strings.HasPrefix(sc.Text(), "acquired") {
						break
					}
				}
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				if len(lines) != 2 || lines[0] != tc.want || lines[1] != "acquired lease-1" {
					t.Errorf("%s: stdout %q, stderr %s", tc.mode, lines, stderr.String())
				}
			}
		})
	}
}
