package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

func init() {
	register(verb{name: "devserver", summary: "run the built-in Keygen-compatible server seeded with a demo license", run: runDevserver})
}

const devserverHelp = `When ready, devserver prints exactly one JSON line on stdout with the keys api_url, account,
product, policy, license_id, license_key, license_token (a license token, when the
--auth-strategy allows tokens; else empty), public_key (Ed25519, hex), rsa_public_key,
ecdsa_public_key, entitlements and admin_token.

By default the demo is what a vendor most likely has in Keygen: TOKEN authentication
(the license key cannot log in; use license_token) and Keygen's default license
permissions (no policy.read, product.read, user.read, account.read). Use
--auth-strategy LICENSE or MIXED and --permissions all to loosen it.

keygen-go (the official Go SDK) verifies signatures against its API URL's host WITH the
port, while Keygen signs the host alone: run with --sign-host-with-port to use keygen-go
with signature checks on against devserver --addr 127.0.0.1:0.

Faults (repeatable --fault, or at run time with "keygen-agent debug fault"):
  refuse, hang, latency=25ms, 5xx=0.5, 429, bad-signature, no-signature, truncate,
  date-skew=-10m, route=POST /processes (limits the faults to that route) Clients use the usual
<api_url>/v1/accounts/<account>/... paths. Logs go to stderr. Ctrl-C (SIGINT/SIGTERM) stops it.

The admin token can seed more products, policies and licenses over HTTP
(POST /products, /policies, /licenses, /entitlements, /licenses/{id}/entitlements).

exit codes:
  0  stopped cleanly
  1  failed to start
  2  bad flags`

func runDevserver(e *env) int {
	fs := newFlagSet(e, "devserver", "", "Run an in-memory Keygen-compatible API server (signed responses, certificates, heartbeats,\nculling, limits, rate limits) seeded with one demo product, policy and license.", devserverHelp)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	maxProcs := fs.Int("max-processes", 0, "the demo policy's maxProcesses (0 = unlimited)")
	maxMachines := fs.Int("max-machines", 0, "the demo policy's maxMachines (0 = unlimited)")
	hb := fs.Int("heartbeat-duration", 0, "the demo policy's heartbeatDuration in seconds (0 = Keygen's default 600; else >= 60)")
	leasing := fs.String("leasing", "PER_MACHINE", "processLeasingStrategy: PER_MACHINE, PER_LICENSE or PER_USER")
	strict := fs.Bool("strict", false, "make the demo policy strict")
	requireHB := fs.Bool("require-heartbeat", false, "the demo policy requires machine heartbeats")
	nodeLocked := fs.Bool("node-locked", false, "make the demo policy node-locked (one machine) instead of floating")
	scheme := fs.String("scheme", "ED25519_SIGN", "the demo policy's license key scheme")
	overage := fs.String("overage", "", "overageStrategy (default NO_OVERAGE)")
	cull := fs.String("cull-strategy", "", "heartbeatCullStrategy: DEACTIVATE_DEAD (default) or KEEP_DEAD")
	revive := fs.String("resurrection", "", "heartbeatResurrectionStrategy (default NO_REVIVE)")
	cullEvery := fs.Duration("cull-interval", 2*time.Minute, "how often dead machines and processes are culled")
	noRate := fs.Bool("no-rate-limit", false, "disable rate limiting")
	key := fs.String("license-key", "", "use this key for the demo license (default: generated)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	authStrategy := fs.String("auth-strategy", "TOKEN", "the demo policy's authenticationStrategy: TOKEN (Keygen's default), LICENSE, MIXED or NONE")
	hostPort := fs.Bool("sign-host-with-port", false, "sign the Host header with its port (for keygen-go, which verifies host:port; Keygen signs the host alone)")
	perms := fs.String("permissions", "default", "the demo license's permissions: default (Keygen's), all, or a comma-separated list")
	var faults []string
	fs.Func("fault", "inject a fault at start (repeatable), e.g. latency=25ms, 5xx=0.3, date-skew=-10m", func(v string) error {
		faults = append(faults, v)
		return nil
	})
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "keygen-agent devserver: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *hb != 0 && *hb < 60 {
		fmt.Fprintln(e.stderr, "keygen-agent devserver: --heartbeat-duration must be at least 60 (Keygen's minimum)")
		return exitUsage
	}
	if *maxProcs < 0 || *maxMachines < 0 {
		fmt.Fprintln(e.stderr, "keygen-agent devserver: limits must be >= 0")
		return exitUsage
	}
	f, err := devserver.ParseFaults(faults)
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent devserver: --fault: %v\n", err)
		return exitUsage
	}
	permList, err := devserver.ParsePermissions(*perms)
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent devserver: --permissions: %v\n", err)
		return exitUsage
	}
	log, _ := newLogger(e.stderr, "text", *logLevel)
	if *cullEvery <= 0 {
		*cullEvery = -1
	}
	srv, err := devserver.New(devserver.Options{Addr: *addr, Logger: log, CullInterval: *cullEvery, DisableRateLimit: *noRate, SignHostWithPort: *hostPort})
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent devserver: %v\n", err)
		return exitFailure
	}
	defer srv.Close()
	do := devserver.DemoOptions{
		HeartbeatDuration: *hb, Leasing: *leasing, Strict: *strict, RequireHeartbeat: *requireHB,
		NodeLocked: *nodeLocked, Scheme: *scheme, OverageStrategy: *overage, CullStrategy: *cull,
		ResurrectionStrategy: *revive, LicenseKey: *key,
		AuthenticationStrategy: *authStrategy, Permissions: permList,
	}
	if *maxProcs > 0 {
		do.MaxProcesses = maxProcs
	}
	if *maxMachines > 0 {
		do.MaxMachines = maxMachines
	}
	demo, err := srv.Demo(do)
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent devserver: seeding: %v\n", err)
		return exitUsage
	}
	codes := make([]string, 0, len(demo.Entitlements))
	for _, en := range demo.Entitlements {
		codes = append(codes, en.Code)
	}
	line, err := json.Marshal(map[string]any{
		"api_url": srv.URL(), "account": srv.AccountID(), "product": demo.Product.ID, "policy": demo.Policy.ID,
		"license_id": demo.License.ID, "license_key": demo.License.Key, "license_token": demo.LicenseToken, "public_key": srv.PublicKeyHex(),
		"ecdsa_public_key": srv.ECDSAPublicKeyPEM(), "rsa_public_key": srv.RSAPublicKeyPEM(),
		"entitlements": codes, "admin_token": srv.AdminToken(),
	})
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent devserver: %v\n", err)
		return exitFailure
	}
	srv.SetFaults(f)
	fmt.Fprintf(e.stdout, "%s\n", line)
	log.Info("devserver ready", "api_url", srv.URL(), "account", srv.AccountID(), "license_id", demo.License.ID)
	<-e.ctx.Done()
	log.Info("devserver stopping")
	if err := srv.Close(); err != nil {
		log.Warn("devserver close", "err", err)
	}
	return exitOK
}
