package main

import (
	"encoding/json"
	"fmt"
	"github.com/keygen-agent/keygen-agent/agent"
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
		return exitForCallError(e, "status", err)
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
	// Labels are padded to the longest ("max processes:", "offline until:").
	row := func(label, format string, a ...any) {
		fmt.Fprintf(w, "%-14s "+format+"\n", append([]any{label + ":"}, a...)...)
	}
	row("state", "%s (%s, %s)", st.State, valid, online)
	if st.Code != "" || st.Detail != "" {
		row("detail", "%s", strings.TrimSpace(st.Code+" "+st.Detail))
	}
	if fix := agent.Explain(st.Code); fix != "" && !st.Valid && !strings.Contains(st.Detail, fix) {
		row("fix", "%s", fix)
	}
	if l := st.License; l != nil {
		row("license", "%s", strings.TrimSpace(l.ID+" "+l.Name))
		row("expires", "%s", fmtTime(l.Expiry, "never"))
		row("max processes", "%s", fmtLimit(l.MaxProcesses))
		if l.PolicySource != "" {
			row("strategies", "%s", policyLine(l))
		}
	}
	licenseOnly := st.Activation == agent.ActivationNone
	if m := st.Machine; m != nil {
		none := "not activated"
		if licenseOnly {
			none = "none (license-only mode)"
		}
		row("machine", "%s (fingerprint %s)", nonEmptyStr(m.ID, none), shortFP(m.Fingerprint))
	}
	row("entitlements", "%s", nonEmptyStr(strings.Join(st.Entitlements, ", "), "none"))
	if licenseOnly {
		row("leases", "%d in use, limit %s (counted on this machine only; no Keygen processes)", st.Leases.Active, fmtLimit(st.Leases.Limit))
	} else {
		row("leases", "%d in use, limit %s, heartbeat capacity %d", st.Leases.Active, fmtLimit(st.Leases.Limit), st.Leases.Capacity)
	}
	if st.Activation != "" {
		row("activation", "%s", st.Activation)
	}
	if st.OfflineSource != "" {
		row("offline from", "%s", strings.ReplaceAll(st.OfflineSource, "_", " "))
	}
	row("last sync", "%s", fmtTime(st.LastSync, "never"))
	if !st.Online && st.OfflineUntil != nil {
		row("offline until", "%s (%s left)", fmtTime(st.OfflineUntil, "-"), time.Until(*st.OfflineUntil).Round(time.Minute))
	}
	if st.ClockSkew != nil {
		row("clock skew", "%s", st.ClockSkew.Detail)
	}
	for _, c := range st.HardwareChanges {
		row("component", "%-20s %s", c.Name, c.Change)
	}
	for _, o := range st.OtherAgents {
		row("other agent", "%s holds %d Keygen processes of this license on this machine (run one agent per machine)", o.AgentID, o.Processes)
	}
}

// policyLine names the strategies the agent applies and where they come
// from: read from the policy, or assumed from the config when the license
// may not read its policy (Keygen's default permissions).
func policyLine(l *ipc.LicenseInfo) string {
	s := fmt.Sprintf("leasing %s, overage %s, matching %s", nonEmptyStr(l.Strategy, "-"), nonEmptyStr(l.Overage, "-"), nonEmptyStr(l.ComponentMatching, "-"))
	if l.PolicySource == agent.PolicySourceConfig {
		return s + " (assumed from the config: the license may not read its policy; set them to the policy's values or grant policy.read)"
	}
	return s + " (read from the policy)"
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
