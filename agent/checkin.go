package agent

import (
	"context"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// Check-ins (a policy with requireCheckIn). Keygen starts the clock at the
// license's creation (license.rb set_first_check_in), answers OVERDUE on
// validation once lastCheckIn is older than checkInIntervalCount ×
// checkInInterval (check_in_overdue?), and serialises nextCheckIn
// (license_serializer.rb). The agent checks in when the remaining time is
// under checkInMargin, at a revalidation, so a failed attempt is retried
// at the next ones well before the due date.

// checkInMargin is how long before nextCheckIn the agent checks in: a
// quarter of the interval, at least six revalidations, at most half the
// interval.
func (a *Agent) checkInMargin(last, next time.Time) time.Duration {
	period := next.Sub(last)
	m := max(period/4, 6*a.config().RevalidateInterval.D())
	return min(m, period/2)
}

// checkInIfDue checks the license in when its next check-in is near.
func (a *Agent) checkInIfDue(ctx context.Context, v licenseView) {
	lic := v.License
	if lic == nil || !lic.RequireCheckIn {
		return
	}
	if lic.NextCheckIn == nil && a.knownNextCheckIn() == nil {
		// No due date known (Keygen sets one from creation): check in
		// now to learn it.
		if err := a.checkIn(ctx, lic); err != nil {
			a.log.Warn("check-in failed; retrying at the next revalidation", "err", err)
		}
		return
	}
	next := time.Time{}
	if lic.NextCheckIn != nil {
		next = *lic.NextCheckIn
	}
	if k := a.knownNextCheckIn(); k != nil && k.After(next) {
		next = *k
	}
	last := next.Add(-24 * time.Hour)
	if lic.LastCheckIn != nil && lic.LastCheckIn.Before(next) {
		last = *lic.LastCheckIn
	}
	now, _ := a.trustedNow()
	if now.Before(next.Add(-a.checkInMargin(last, next))) {
		a.setKnownNextCheckIn(&next)
		return
	}
	if err := a.checkIn(ctx, lic); err != nil {
		a.log.Warn("check-in failed; retrying at the next revalidation", "due", next, "err", err)
	}
}

// checkIn sends one check-in and records the next due date. The machine
// file is checked out again at the next sync so that the offline due date
// it carries moves on too.
func (a *Agent) checkIn(ctx context.Context, lic *keygen.License) error {
	var got *keygen.License
	err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		var err error
		got, err = c.CheckIn(ctx, lic.ID)
		return err
	})
	a.klc.mu.Lock()
	if err != nil {
		a.klc.checkInErr = err.Error()
	} else {
		a.klc.checkInErr = ""
	}
	a.klc.mu.Unlock()
	if err != nil {
		return err
	}
	a.log.Info("license checked in", "next", got.NextCheckIn)
	a.setKnownNextCheckIn(got.NextCheckIn)
	a.klc.mu.Lock()
	a.klc.refreshCert = true
	a.klc.mu.Unlock()
	return nil
}

func (a *Agent) knownNextCheckIn() *time.Time {
	a.klc.mu.Lock()
	defer a.klc.mu.Unlock()
	return a.klc.nextCheckIn
}

func (a *Agent) setKnownNextCheckIn(t *time.Time) {
	if t == nil {
		return
	}
	a.klc.mu.Lock()
	defer a.klc.mu.Unlock()
	if a.klc.nextCheckIn == nil || t.After(*a.klc.nextCheckIn) {
		tt := *t
		a.klc.nextCheckIn = &tt
	}
}

// nextCheckIn is the check-in due date status reports: the later of the
// license's (online answer or certificate) and the last check-in's.
func (a *Agent) nextCheckIn(v licenseView) *time.Time {
	var due *time.Time
	if v.License != nil && v.License.RequireCheckIn && v.License.NextCheckIn != nil {
		t := *v.License.NextCheckIn
		due = &t
	}
	if k := a.knownNextCheckIn(); k != nil && (due == nil || k.After(*due)) {
		due = k
	}
	return due
}

// overdueView applies a missed check-in to an offline view: Keygen would
// answer OVERDUE ("is overdue for check in") and refuse the license
// (license_validation_service.rb), so the agent does too once trusted time
// passes the due date it last knew.
func (a *Agent) overdueView(v *licenseView, now time.Time) {
	if v.Online || !v.Valid {
		return
	}
	due := a.nextCheckIn(*v)
	if due == nil || now.Before(*due) {
		return
	}
	v.State, v.Valid, v.Code = StateInvalid, false, "OVERDUE"
	v.Detail = "is overdue for check in (due " + due.UTC().Format(time.RFC3339) +
		"): connect to the internet so the agent can check the license in"
}
