// Package leaseverify checks the evidence keygen-agent hands an app with a
// lease: the Keygen-signed document of the app's own Keygen process and a
// Keygen-signed machine file. An app verifies it with the account's Ed25519
// public key, so an agent replaced by a stub (a script answering every
// lease.acquire) unlocks nothing.
//
// The package depends on the standard library only; an app imports it
// without the agent. docs/protocol.md ("Verifying a lease") describes the
// same checks for apps in other languages.
package leaseverify

import (
	"errors"
	"fmt"
)

// Evidence statuses.
const (
	// StatusSigned: Process holds Keygen's signed answer to the spawn (or
	// to a later heartbeat) of this lease's process.
	StatusSigned = "signed"
	// StatusPending: the lease was granted before Keygen answered; a
	// lease.confirmed notification brings the signed evidence.
	StatusPending = "pending"
	// StatusOffline: Keygen was unreachable; only the machine file is
	// available, which proves the machine is licensed, not the seat count.
	StatusOffline = "offline"
)

// Evidence is the "evidence" object of a lease.acquire result and of a
// lease.confirmed notification.
type Evidence struct {
	Status  string          `json:"status"`
	Process *SignedResponse `json:"process,omitempty"`
	// MachineFile is a machine file (base64+ed25519, without the license
	// included) as Keygen issued it.
	MachineFile string `json:"machine_file,omitempty"`
}

// SignedResponse is one HTTP response from Keygen, kept exactly as received,
// with what its Keygen-Signature covers.
type SignedResponse struct {
	Body          []byte `json:"body"`           // the raw body; base64 on the wire
	Signature     string `json:"signature"`      // the Keygen-Signature header
	Digest        string `json:"digest"`         // the Digest header
	Date          string `json:"date"`           // the Date header that was signed
	RequestTarget string `json:"request_target"` // "<lowercase method> <path?query>"
	Host          string `json:"host"`           // the host, without port
}

// Check names one verification step; [Error] says which one failed.
type Check string

// The checks, in the order [VerifyLease] runs them.
const (
	CheckOptions     Check = "options"      // the caller's options are incomplete
	CheckEvidence    Check = "evidence"     // no evidence, or an unknown status
	CheckPending     Check = "pending"      // the evidence has not arrived yet
	CheckOffline     Check = "offline"      // offline evidence, refused by RequireOnline
	CheckMachineFile Check = "machine_file" // machine file malformed or not signed by the key
	CheckExpired     Check = "expired"      // machine file expired (or issued in the future)
	CheckFingerprint Check = "fingerprint"  // machine file names another machine
	CheckDigest      Check = "digest"       // Digest does not match the body
	CheckSignature   Check = "signature"    // Keygen-Signature does not verify with the key
	CheckDocument    Check = "document"     // the signed body is not a process document
	CheckProcess     Check = "process"      // the process is not this app's own process
	CheckLease       Check = "lease"        // the process metadata names another lease
	CheckMachine     Check = "machine"      // the process belongs to another machine or license
	CheckDate        Check = "date"         // the signed Date is too old or in the future
)

// Error is a refused verification. errors.Is(err, &Error{Check: c}) and
// [IsCheck] match by Check.
type Error struct {
	Check  Check
	Detail string
}

func (e *Error) Error() string {
	return fmt.Sprintf("lease evidence refused (%s): %s", e.Check, e.Detail)
}

// Is matches an *Error with the same Check.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Check == e.Check
}

// IsCheck reports whether err is a refusal by check c.
func IsCheck(err error, c Check) bool {
	var e *Error
	return errors.As(err, &e) && e.Check == c
}

func fail(c Check, format string, args ...any) *Error {
	return &Error{Check: c, Detail: fmt.Sprintf(format, args...)}
}
