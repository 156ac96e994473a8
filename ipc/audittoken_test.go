package ipc

import "testing"

func TestParseAuditToken(t *testing.T) {
	// auid 501, euid 0 (a setuid tool run by 501), egid 20, ruid 501,
	// rgid 20, pid 4242, asid 100007, pid version 3.
	got := parseAuditToken([8]uint32{501, 0, 20, 501, 20, 4242, 100007, 3})
	want := auditToken{EUID: 0, EGID: 20, PID: 4242, PIDVersion: 3}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
