package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/ipc"
)

// TestPrintStatusAligned: every value starts in the same column, including
// the long labels ("max processes:", "offline until:").
func TestPrintStatusAligned(t *testing.T) {
	three := 3
	until := time.Now().Add(48 * time.Hour)
	st := &ipc.Status{State: "offline", Code: "VALID", Valid: true, Online: false,
		License:      &ipc.LicenseInfo{ID: "L1", Name: "Pro", MaxProcesses: &three},
		Machine:      &ipc.MachineInfo{ID: "M1", Fingerprint: "abc"},
		Entitlements: []string{"PRO"}, OfflineUntil: &until,
		HardwareChanges: []ipc.ComponentChange{{Name: "disk-1", Change: "changed"}},
		OtherAgents:     []ipc.OtherAgent{{AgentID: "agent_x", Processes: 2}}}
	var b bytes.Buffer
	printStatus(&b, st)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 12 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	for _, l := range lines {
		colon := strings.Index(l, ":")
		if len(l) < 16 || l[14] != ' ' || l[15] == ' ' || colon > 13 {
			t.Errorf("misaligned: %q", l)
		}
	}
	for _, want := range []string{"max processes: 3", "offline until: ", "detail:        VALID\n", "other agent:   agent_x holds 2 Keygen processes"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in\n%s", want, b.String())
		}
	}
}

// In license-only mode status says so, names the offline source and does
// not speak of a machine activation or heartbeat capacity.
func TestPrintStatusLicenseOnly(t *testing.T) {
	two := 2
	st := &ipc.Status{State: "active", Code: "VALID", Valid: true, Online: true, Activation: "none", OfflineSource: "license_file",
		License: &ipc.LicenseInfo{ID: "L1"}, Machine: &ipc.MachineInfo{Fingerprint: "abc"},
		Leases: ipc.LeaseUsage{Active: 1, Limit: &two, Capacity: 1 << 30}}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	for _, want := range []string{"activation:    none\n", "offline from:  license file\n", "machine:       none (license-only mode)",
		"leases:        1 in use, limit 2 (counted on this machine only"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "heartbeat capacity") {
		t.Errorf("heartbeat capacity shown in license-only mode:\n%s", out)
	}
}

func TestPrintStatusPolicySource(t *testing.T) {
	for src, want := range map[string]string{
		agent.PolicySourceConfig: "strategies:    leasing PER_MACHINE, overage NO_OVERAGE, matching MATCH_ANY (assumed from the config",
		agent.PolicySourceKeygen: "strategies:    leasing PER_MACHINE, overage NO_OVERAGE, matching MATCH_ANY (read from the policy)",
	} {
		st := &ipc.Status{State: "active", Valid: true, Online: true,
			License: &ipc.LicenseInfo{ID: "L1", Strategy: "PER_MACHINE", Overage: "NO_OVERAGE", ComponentMatching: "MATCH_ANY", PolicySource: src}}
		var b bytes.Buffer
		printStatus(&b, st)
		if !strings.Contains(b.String(), want) {
			t.Errorf("%s: no %q in\n%s", src, want, b.String())
		}
	}
}
