//go:build unix

package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
)

// The Python and Node examples verify a real lease from `dev`: Keygen's
// signed process document and the machine file, checked with the account's
// public key against this machine's fingerprint, exactly as an app does it
// from docs/protocol.md "Verifying a lease". (ipc/examples_verify_test.go
// runs them against a stub agent and every tampered variant.) Each then
// records a metered use with license.use.
func TestExamplesVerifyRealLeaseFromDev(t *testing.T) {
	useNoService(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	info := startDev(t, dir)
	sock := info["socket"]

	// Wait for the agent to be active and learn this machine's fingerprint.
	var fp string
	deadline := time.Now().Add(30 * time.Second)
	for fp == "" {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		c, err := ipc.Dial(ctx, sock)
		if err == nil {
			st, serr := c.Status(ctx)
			if serr == nil && st.State == "active" && st.Machine != nil {
				fp = st.Machine.Fingerprint
			}
			c.Close()
		}
		cancel()
		if fp == "" {
			if time.Now().After(deadline) {
				t.Fatal("the dev agent did not become active")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	for _, ex := range []struct{ interp, script string }{
		{"python3", "../../examples/python/keygen_lease.py"},
		{"node", "../../examples/node/keygen_lease.js"},
	} {
		t.Run(ex.interp, func(t *testing.T) {
			bin, err := exec.LookPath(ex.interp)
			if err != nil {
				t.Skipf("%s not installed", ex.interp)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, ex.script, "--socket", sock, "--app", "verify-"+ex.interp,
				"--public-key", info["public_key"], "--fingerprint", fp, "--use", "1")
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}()
			sc := bufio.NewScanner(out)
			var lines []string
			for sc.Scan() {
				lines = append(lines, sc.Text())
				if strings.HasPrefix(sc.Text(), "uses: ") {
					break
				}
			}
			if len(lines) < 2 || !strings.HasPrefix(lines[0], "verified ") || lines[0] == "verified offline: machine file only" {
				if strings.Contains(stderr.String(), "install the 'cryptography' package or PyNaCl") {
					t.Skip("python3 has neither cryptography nor PyNaCl: it cannot verify")
				}
				t.Fatalf("want a verified online lease; stdout %q, stderr %s", lines, stderr.String())
			}
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, "uses: ") || strings.Contains(last, "offline") {
				t.Fatalf("want one metered use recorded online; stdout %q, stderr %s", lines, stderr.String())
			}
		})
	}
}
