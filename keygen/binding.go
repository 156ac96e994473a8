package keygen

import (
	"fmt"
	"time"
)

// Answers are bound to their requests. A signature covers the request's
// method and path and the response's Date, not the request body: a signed
// answer to "POST /processes" verifies as the answer to any spawn made
// within MaxClockDrift. So each endpoint checks that the answer is about
// what it asked for, and the Date is bounded on both sides.

var (
	// ErrAnswerMismatch: a genuine-looking answer about something other
	// than what was requested (a replayed answer). It matches ErrNotGenuine.
	ErrAnswerMismatch = subSentinel("keygen: answer does not match the request (replay?)", ErrNotGenuine)
	// ErrResponseFromFuture: the signed Date is later than now plus
	// Config.MaxClockDrift. It matches ErrNotGenuine.
	ErrResponseFromFuture = subSentinel("keygen: response date is in the future", ErrNotGenuine)
)

// DateError is checkDate's error: a verified answer whose signed Date
// lies outside the replay window. It matches ErrResponseTooOld or
// ErrResponseFromFuture (and so ErrNotGenuine). Date lets a caller whose
// clock was wrong check the answer again once it has relearnt the time:
// an answer to a request that is not idempotent (a usage increment) may
// have been genuine, and sending the request again would repeat it.
type DateError struct {
	Date   time.Time // the signed Date
	Status int       // the answer's HTTP status (a refusal changed nothing)
	err    error
}

func (e *DateError) Error() string { return e.err.Error() }
func (e *DateError) Unwrap() error { return e.err }

// checkDate bounds a verified signed Date to [now-drift, now+drift]; a
// negative drift disables the check.
func checkDate(date, now time.Time, drift time.Duration) error {
	if drift < 0 {
		return nil
	}
	if age := now.Sub(date); age > drift {
		return &DateError{Date: date, err: fmt.Errorf("%w: signed %s ago (window %s)", ErrResponseTooOld, age.Round(time.Second), drift)}
	}
	if ahead := date.Sub(now); ahead > drift {
		return &DateError{Date: date, err: fmt.Errorf("%w: signed %s ahead of this clock (window %s)", ErrResponseFromFuture, ahead.Round(time.Second), drift)}
	}
	return nil
}

// leaseIDKey is the process metadata key the agent binds a spawn to; Keygen
// camelizes metadata keys (machine_process_serializer.rb), so it is sent in
// that form.
const leaseIDKey = "leaseId"

// checkSpawn: a spawn's answer must be the process just created for pid on
// machineID, carrying the metadata's lease id if one was sent.
func checkSpawn(p *Process, machineID, pid string, metadata map[string]any) error {
	if p.PID != pid {
		return fmt.Errorf("%w: spawn for pid %q answered with process %s for pid %q", ErrAnswerMismatch, pid, p.ID, p.PID)
	}
	if p.MachineID != "" && p.MachineID != machineID {
		return fmt.Errorf("%w: spawn on machine %s answered with a process on machine %s", ErrAnswerMismatch, machineID, p.MachineID)
	}
	if want, ok := metadata[leaseIDKey].(string); ok {
		if got, _ := p.Metadata[leaseIDKey].(string); got != want {
			return fmt.Errorf("%w: spawn for lease %q answered with a process for lease %q", ErrAnswerMismatch, want, got)
		}
	}
	return nil
}

// checkProcessID: a read or ping of process id must answer about id.
func checkProcessID(p *Process, id string) error {
	if p.ID != id {
		return fmt.Errorf("%w: asked about process %s, answered about %s", ErrAnswerMismatch, id, p.ID)
	}
	return nil
}

// checkCheckout: a check-out's answer must name the machine or license it
// was asked for, when the request named it by id. (A machine checked out by
// fingerprint is bound by the certificate: OpenCertificate checks its
// fingerprint.)
func checkCheckout(co *Checkout, rel, id string) error {
	got := co.MachineID
	if rel == "license" {
		got = co.LicenseID
	}
	if got != "" && id != "" && looksLikeID(id) && got != id {
		return fmt.Errorf("%w: check-out of %s %s answered for %s", ErrAnswerMismatch, rel, id, got)
	}
	return nil
}

// looksLikeID reports whether s has the shape of a Keygen resource id (a
// UUID), as opposed to a fingerprint or a license key.
func looksLikeID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
