package ipc

// auditToken is the part of macOS's audit_token_t (eight 32-bit words,
// bsm/libbsm.h's audit_token_to_* accessors) the agent uses: the effective
// uid and gid, the PID and the PID version, all as the kernel recorded them
// when the client connected (LOCAL_PEERTOKEN).
type auditToken struct {
	EUID, EGID uint32
	PID        int
	PIDVersion uint32
}

// parseAuditToken reads the words of an audit_token_t:
// [0] audit uid, [1] euid, [2] egid, [3] ruid, [4] rgid, [5] pid,
// [6] audit session id, [7] pid version.
func parseAuditToken(v [8]uint32) auditToken {
	return auditToken{EUID: v[1], EGID: v[2], PID: int(v[5]), PIDVersion: v[7]}
}
