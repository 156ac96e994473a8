package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
)

func init() {
	register(verb{name: "lease", summary: "acquire a lease and hold it until interrupted (sample client)", run: runLease})
}

const leaseHelp = `A sample app: acquires one lease, prints its entitlements and holds it until
Ctrl-C (the lease is released when this process exits). It reconnects and
re-acquires if the agent restarts.

exit codes:
  0  held until interrupted
  1  the operation failed
  2  bad flags or arguments
  4  the agent is not reachable
  5  refused (no free seat, license invalid) or the lease was revoked`

func runLease(e *env) int {
	fs := newFlagSet(e, "lease", "", "Acquire a lease and hold it until interrupted.", leaseHelp)
	socket := socketFlag(fs, e)
	app := fs.String("app", "keygen-agent-cli", "app name reported with the lease")
	appVersion := fs.String("app-version", "", "app version reported with the lease")
	wait := fs.Duration("wait", 0, "wait up to this long for a free seat (e.g. 30s)")
	asJSON := fs.Bool("json", false, "print events as JSON lines")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(e.stderr, "keygen-agent: lease takes no arguments")
		return exitUsage
	}
	ctx, cancel := contextWithTimeout(e, dialTimeout)
	c, err := ipc.DialOptions(ctx, ipc.ClientOptions{Path: *socket, Reconnect: true, App: *app, AppVersion: *appVersion})
	cancel()
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent: cannot reach the agent at %s: is it running? (%s)\n", *socket, errMessage(err))
		return exitUnavailable
	}
	defer c.Close()
	emit := func(event string, v map[string]any) {
		if *asJSON {
			v["event"] = event
			b, _ := json.Marshal(v)
			fmt.Fprintf(e.stdout, "%s\n", b)
		}
	}
	l, err := c.Acquire(e.ctx, ipc.AcquireParams{WaitMS: wait.Milliseconds()})
	if err != nil {
		var ie *ipc.Error
		if asIPC(err, &ie) && ie.Code == ipc.CodeProcessLimitExceeded {
			limit, _ := ie.DataInt("limit")
			count, _ := ie.DataInt("count")
			emit("refused", map[string]any{"code": ie.Code, "message": ie.Message, "limit": limit, "count": count})
		}
		return exitForCallError(e, "acquire a lease", err)
	}
	ents := l.Entitlements
	if ents == nil {
		ents = []string{}
	}
	emit("acquired", map[string]any{"lease_id": l.ID, "process_id": l.ProcessID, "offline": l.Offline, "entitlements": ents})
	if !*asJSON {
		mode := "online"
		if l.Offline {
			mode = "offline"
		}
		fmt.Fprintf(e.stdout, "lease %s acquired (%s)\nentitlements: %s\nholding; press Ctrl-C to release\n", l.ID, mode, strings.Join(ents, ", "))
	}
	for {
		select {
		case <-e.ctx.Done():
			rctx, cancel := contextWithTimeout(e, 5*time.Second)
			defer cancel()
			_ = l.Release(rctx)
			emit("released", map[string]any{"lease_id": l.Current().LeaseID})
			if !*asJSON {
				fmt.Fprintln(e.stdout, "released")
			}
			return exitOK
		case r := <-l.Revoked():
			emit("revoked", map[string]any{"lease_id": r.LeaseID, "reason": r.Reason, "code": r.Code})
			fmt.Fprintf(e.stderr, "keygen-agent: lease %s revoked: %s (%s)\n", r.LeaseID, r.Reason, r.Code)
			return exitDenied
		case n, ok := <-c.Notifications():
			if !ok {
				return exitFailure
			}
			if n.Method == ipc.NotifyLicenseChanged {
				emit("license_changed", map[string]any{"status": n.Params})
				if !*asJSON {
					fmt.Fprintln(e.stdout, "license changed")
				}
			}
		}
	}
}
