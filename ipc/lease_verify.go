package ipc

import (
	"github.com/keygen-agent/keygen-agent/internal/procwatch"
	"os"
	"time"

	"github.com/keygen-agent/keygen-agent/leaseverify"
)

// loaded is when this package was initialised: after this process started
// and before any lease it acquires was signed.
var loaded = time.Now()

// VerifyLease checks a lease.acquire result (or the evidence of a
// lease.confirmed notification put into one) with the account's public key,
// as the calling process: o's PID, StartTime and NotBefore are filled from
// this process when zero. A refusal is a *[leaseverify.Error] naming the
// failed check. See docs/protocol.md, "Verifying a lease".
//
// API maturity: stable.
func VerifyLease(r *AcquireResult, o leaseverify.Options) (*leaseverify.Result, error) {
	if o.PID == 0 {
		o.PID = os.Getpid()
		if o.StartTime == 0 {
			o.StartTime, _ = procwatch.StartTime(o.PID)
		}
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = loaded
	}
	return leaseverify.VerifyLease(r.LeaseID, r.Evidence, o)
}
