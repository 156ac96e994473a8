package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
)

func init() {
	register(verb{name: "status", summary: "show the license state as the agent sees it", run: runStatus})
}

const statusHelp = `exit codes:
  0  the license is valid (apps may run)
  4  the agent is not reachable
  5  the license is not valid (see the state and detail)`

func runStatus(e *env) int {
	fs := newFlagSet(e, "status", "", "Show the agent's license state: validity, expiry, entitlements, online or offline, leases.", statusHelp)
	socket := socketFlag(fs, e)
	asJSON := fs.Bool("json", false, "print the license.status result as JSON")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	c, code := dialAgent(e, *socket)
	if c == nil {
		return code
	}
	defer c.Close()
	st, err := c.Status(e.ctx)
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent: status: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	} else {
		printStatus(e.stdout, st)
	}
	if !st.Valid {
		return exitDenied
	}
	return exitOK
}

func printStatus(w io.Writer, st *ipc.Status) {
	valid := "not valid"
	if st.Valid {
		valid = "valid"
	}
	online := "offline"
	if st.Online {
		online = "online"
	}
	fmt.Fprintf(w, "state:        %s (%s, %s)\n", st.State, valid, online)
	if st.Code != "" || st.Detail != "" {
		fmt.Fprintf(w, "detail:       %s %s\n", st.Code, st.Detail)
	}
	if l := st.License; l != nil {
		fmt.Fprintf(w, "license:      %s %s\n", l.ID, l.Name)
		fmt.Fprintf(w, "expires:      %s\n", fmtTime(l.Expiry, "never"))
		fmt.Fprintf(w, "max processes: %s\n", fmtLimit(l.MaxProcesses))
	}
	if m := st.Machine; m != nil {
		fmt.Fprintf(w, "machine:      %s (fingerprint %s)\n", nonEmptyStr(m.ID, "not activated"), shortFP(m.Fingerprint))
	}
	fmt.Fprintf(w, "entitlements: %s\n", nonEmptyStr(strings.Join(st.Entitlements, ", "), "none"))
	fmt.Fprintf(w, "leases:       %d in use, limit %s, heartbeat capacity %d\n", st.Leases.Active, fmtLimit(st.Leases.Limit), st.Leases.Capacity)
	fmt.Fprintf(w, "last sync:    %s\n", fmtTime(st.LastSync, "never"))
	if !st.Online && st.OfflineUntil != nil {
		fmt.Fprintf(w, "offline until: %s (%s left)\n", st.OfflineUntil.Format(time.RFC3339), time.Until(*st.OfflineUntil).Round(time.Minute))
	}
	for _, c := range st.HardwareChanges {
		fmt.Fprintf(w, "component:    %-20s %s\n", c.Name, c.Change)
	}
}

func fmtTime(t *time.Time, none string) string {
	if t == nil || t.IsZero() {
		return none
	}
	return t.Local().Format(time.RFC3339)
}

func fmtLimit(n *int) string {
	if n == nil {
		return "unlimited"
	}
	return fmt.Sprint(*n)
}

func nonEmptyStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func shortFP(fp string) string {
	if len(fp) > 16 {
		return fp[:16] + "…"
	}
	return fp
}
