package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

func init() {
	register(verb{name: "dev", summary: "run the built-in Keygen dev server plus an agent, ready for clients", run: runDev})
}

const devHelp = `When ready, dev prints exactly one JSON line on stdout with the keys socket, api_url, account,
product, policy, license_id, license_key, license_token, public_key, admin_token and data_dir, then
next steps on stderr.

By default the demo is what a vendor most likely has in Keygen: a policy with TOKEN authentication
(the license key validates but cannot log in; the agent is given the demo's license token) and a
license with Keygen's default permissions (no policy.read: the agent assumes the policy-only
settings from its config). --auth-strategy LICENSE or MIXED and --license-permissions all loosen it. Ctrl-C stops the agent (its leases are killed) and the dev server, and removes the temporary
data directory unless --data-dir was given.

--fault SPEC (repeatable) injects dev server faults once the agent is ready (it has activated, so
a fault such as refuse exercises your app's offline path rather than a failed start):
  refuse, hang, latency=25ms, 5xx=0.5, 429, bad-signature, no-signature, truncate,
  date-skew=-10m, route=POST /processes (limits the faults to that route).
Change or clear them at run time with "keygen-agent debug fault set SPEC... | clear", giving it
the api_url, account and admin_token of the ready line.

exit codes:
  0  stopped cleanly
  1  failed to start or run
  2  bad flags`

func runDev(e *env) int {
	fs := newFlagSet(e, "dev", "", "Run an in-memory Keygen-compatible dev server seeded with a demo license, and an agent\nactivated against it, on a temporary socket.", devHelp)
	maxProcs := fs.Int("max-processes", 3, "the demo policy's maxProcesses (0 = unlimited)")
	hb := fs.Int("heartbeat-duration", 600, "the demo policy's heartbeatDuration in seconds (>= 60)")
	leasing := fs.String("leasing", "PER_MACHINE", "processLeasingStrategy: PER_MACHINE, PER_LICENSE or PER_USER")
	strict := fs.Bool("strict", false, "make the demo policy strict")
	addr := fs.String("addr", "127.0.0.1:0", "dev server listen address")
	dataDir := fs.String("data-dir", "", "agent data directory (default: a new temporary directory)")
	socket := fs.String("socket", "", "agent socket (default: inside the temporary directory)")
	logLevel := fs.String("log-level", "info", "agent log level")
	authStrategy := fs.String("auth-strategy", "TOKEN", "the demo policy's authenticationStrategy: TOKEN (Keygen's default), LICENSE, MIXED or NONE")
	perms := fs.String("license-permissions", "default", "the demo license's permissions: default (Keygen's), all, or a comma-separated list")
	maxUses := fs.Int("max-uses", 0, "the demo policy's maxUses for license.use (0 = unlimited)")
	var faultSpecs []string
	fs.Func("fault", "inject a dev server fault once the agent is ready (repeatable), e.g. refuse, latency=25ms, 5xx=0.3", func(v string) error {
		faultSpecs = append(faultSpecs, v)
		return nil
	})
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	faults, err := devserver.ParseFaults(faultSpecs)
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent: --fault: %v\n", err)
		return exitUsage
	}
	if *maxUses < 0 {
		fmt.Fprintln(e.stderr, "keygen-agent: --max-uses must not be negative")
		return exitUsage
	}
	if *hb < 60 {
		fmt.Fprintln(e.stderr, "keygen-agent: --heartbeat-duration must be at least 60 (Keygen's minimum)")
		return exitUsage
	}
	permList, err := devserver.ParsePermissions(*perms)
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent: --license-permissions: %v\n", err)
		return exitUsage
	}
	log, lv := newLogger(e.stderr, "text", *logLevel)

	srv, err := devserver.New(devserver.Options{Addr: *addr, Logger: log})
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent: dev server: %v\n", err)
		return exitFailure
	}
	defer srv.Close()
	do := devserver.DemoOptions{HeartbeatDuration: *hb, Leasing: *leasing, Strict: *strict,
		AuthenticationStrategy: *authStrategy, Permissions: permList}
	if *maxProcs > 0 {
		do.MaxProcesses = maxProcs
	}
	demo, err := srv.Demo(do)
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent: seeding the dev server: %v\n", err)
		return exitUsage
	}
	if *maxUses > 0 {
		srv.UpdatePolicy(demo.Policy.ID, func(p *devserver.Policy) { p.MaxUses = maxUses })
	}

	dir := *dataDir
	if dir == "" {
		dir, err = os.MkdirTemp("", "kga-dev")
		if err != nil {
			fmt.Fprintf(e.stderr, "keygen-agent: %v\n", err)
			return exitFailure
		}
		defer os.RemoveAll(dir)
	}
	sock := *socket
	if sock == "" {
		sock = devSocketPath(dir)
	}
	cfg := agent.Config{
		Account: srv.AccountID(), Product: demo.Product.ID, PublicKey: srv.PublicKeyHex(), APIURL: srv.URL(),
		LicenseKey: demo.License.Key, LicenseToken: demo.LicenseToken, DataDir: dir, Socket: sock, ImportDir: filepath.Join(dir, "import"),
		LogLevel: *logLevel,
	}
	ready := func(socket string) {
		line := map[string]string{
			"socket": socket, "api_url": srv.URL(), "account": srv.AccountID(), "product": demo.Product.ID,
			"policy": demo.Policy.ID, "license_id": demo.License.ID, "license_key": demo.License.Key,
			"license_token": demo.LicenseToken, "public_key": srv.PublicKeyHex(), "admin_token": srv.AdminToken(), "data_dir": dir,
		}
		b, _ := json.Marshal(line)
		if len(faultSpecs) > 0 {
			// The ready line follows the faults, which wait for the
			// agent to finish starting (activation, first sync).
			go func() {
				waitAgentStarted(e.ctx, socket)
				if e.ctx.Err() != nil {
					return
				}
				srv.SetFaults(faults)
				log.Warn("dev server faults injected", "faults", faultSpecs)
				printDevReady(e, b, socket)
			}()
			return
		}
		printDevReady(e, b, socket)
	}
	err = runDaemon(e.ctx, daemonOptions{cfg: cfg, logger: log, logLevel: lv, ready: ready})
	if err != nil && e.ctx.Err() == nil {
		fmt.Fprintf(e.stderr, "keygen-agent: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// waitAgentStarted waits (up to a minute) until the agent on socket is
// past its start: activated and synced, or settled in another state.
func waitAgentStarted(ctx context.Context, socket string) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for ctx.Err() == nil {
		if c, err := ipc.Dial(ctx, socket); err == nil {
			st, err := c.Status(ctx)
			c.Close()
			if err == nil && st.State != "starting" {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func printDevReady(e *env, line []byte, socket string) {
	fmt.Fprintf(e.stdout, "%s\n", line)
	fmt.Fprintf(e.stderr, `
keygen-agent dev is ready (Ctrl-C to stop).
  in another terminal:  keygen-agent lease --socket %[1]s --app demo
                        keygen-agent status --socket %[1]s
                        keygen-agent leases --socket %[1]s
  or from Python:       python3 examples/python/keygen_lease.py --socket %[1]s --app demo
`, socket)
}
