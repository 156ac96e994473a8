package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// Metered usage (license.use). Online, each call is Keygen's
// increment-usage (or decrement-usage for a negative count), and Keygen
// enforces maxUses: its 422 USES_LIMIT_EXCEEDED (license.rb) becomes
// ipc.CodeUsesExceeded. Offline, the uses are queued in the outbox
// (cache.OutboxUse) and the agent enforces maxUses itself from the last
// count Keygen gave plus the increments already queued; queued decrements
// free nothing until Keygen accepts them, because Keygen allows
// decrement-usage only to admin and product tokens
// (Licenses::UsagePolicy#decrement?) and may refuse them at replay.

// metaUsage is the cache meta key of the last usage answer.
const metaUsage = "usage"

// usageRecord is the last use count Keygen answered, kept in the cache so
// that the offline limit survives a restart.
type usageRecord struct {
	LicenseID string    `json:"license_id"`
	Uses      int       `json:"uses"`
	MaxUses   *int      `json:"max_uses,omitempty"`
	At        time.Time `json:"at"`
}

// usePayload is the payload of an OutboxUse entry.
type usePayload struct {
	LicenseID string `json:"license_id"`
	Count     int    `json:"count"` // negative: a decrement
}

// usageState serialises license.use calls, so that the offline check and
// the enqueue that follows it are one step.
type usageState struct {
	mu sync.Mutex
}

func (a *Agent) handleUse(ctx context.Context, raw json.RawMessage) (any, error) {
	var p ipc.UseParams
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	if p.Count == 0 {
		p.Count = 1
	}
	if p.Count > math.MaxInt32 || p.Count < -math.MaxInt32 {
		return nil, ipc.Errorf(ipc.CodeInvalidRequest, "count %d is out of range", p.Count)
	}
	if err := a.needReady(); err != nil {
		return nil, err
	}
	return a.use(ctx, p.Count)
}

func (a *Agent) use(ctx context.Context, count int) (*ipc.UseResult, error) {
	v := a.view()
	if err := a.leaseAllowed(v); err != nil && !(v.Valid && !v.Online) {
		return nil, err
	}
	if v.License == nil {
		return nil, ipc.Errorf(ipc.CodeNotActivated, "no license is known yet")
	}
	a.usage.mu.Lock()
	defer a.usage.mu.Unlock()
	if v.Online {
		res, err := a.useOnline(ctx, v.License, count)
		if !offline(err) {
			return res, err
		}
		a.log.Warn("recording uses: Keygen unreachable; queueing them", "err", err)
		if keygen.IsOffline(err) {
			a.goOfflineAsync(err)
		}
	}
	return a.useOffline(v, count)
}

func (a *Agent) useOnline(ctx context.Context, lic *keygen.License, count int) (*ipc.UseResult, error) {
	ctx, cancel := context.WithTimeout(ctx, spawnWait)
	defer cancel()
	got, err := a.sendUses(ctx, lic.ID, count)
	if err != nil {
		if offline(err) {
			return nil, err
		}
		return nil, a.useError(lic, count, err)
	}
	a.recordUsage(got)
	return &ipc.UseResult{Uses: got.Uses, MaxUses: got.MaxUses, Queued: a.queuedUses(lic.ID).net}, nil
}

// sendUses is the Keygen call for count uses. Unlike call, it does not
// send the change again blindly after relearning the clock: Keygen counts
// every increment it receives (uses_controller.rb increments in place),
// so a success answer refused only for its Date, which proves genuine on
// the relearnt clock, means the uses were counted, and the agent reads
// the count instead (model test seed 96: a Date skew cleared, use(2)
// counted 4). A refusal changed nothing: it is sent again to read it
// (model test seed 49: a decrement refused under a moved clock was
// reported as done).
func (a *Agent) sendUses(ctx context.Context, licenseID string, count int) (*keygen.License, error) {
	var got *keygen.License
	send := func(ctx context.Context, c *keygen.Client) error {
		var err error
		if count < 0 {
			got, err = c.DecrementUsage(ctx, licenseID, -count)
		} else {
			got, err = c.IncrementUsage(ctx, licenseID, count)
		}
		return err
	}
	ctx = context.WithValue(ctx, priorityKey{}, budget.PriorityRefresh)
	err := a.authenticated(ctx, send)
	// Keygen locks the license row FOR UPDATE NOWAIT and answers 409 when
	// another update holds it (uses_controller.rb): nothing was counted,
	// so the change is sent again after a short pause. Another machine's
	// use holds the row for milliseconds.
	for pause := useConflictPause; usesConflict(err) && pause <= 4*useConflictPause; pause *= 2 {
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		err = a.authenticated(ctx, send)
	}
	if dateOutOfWindow(err) && a.relearnClock(ctx) {
		var de *keygen.DateError
		if errors.As(err, &de) && de.Status >= 200 && de.Status < 300 && a.dateInWindow(de.Date) {
			err = a.authenticated(ctx, func(ctx context.Context, c *keygen.Client) error {
				var err error
				got, err = c.License(ctx, licenseID)
				return err
			})
		} else {
			// Still outside the window on the relearnt clock: a replayed
			// answer, not Keygen's to this request.
			err = a.authenticated(ctx, send)
		}
	}
	a.observeAnswer(err)
	return got, err
}

// useConflictPause is the first pause before a use Keygen answered 409
// is sent again; it doubles, three tries in all after the first.
const useConflictPause = 100 * time.Millisecond

// usesConflict: Keygen could not lock the license row for the change.
func usesConflict(err error) bool {
	var kerr *keygen.Error
	return errors.As(err, &kerr) && kerr.Status == http.StatusConflict
}

// dateInWindow: a signed Date within the replay window of the trusted
// clock (keygen.Config.MaxClockDrift's default, maxAhead).
func (a *Agent) dateInWindow(date time.Time) bool {
	d := a.clock.now().Sub(date)
	return d <= maxAhead && d >= -maxAhead
}

// useError maps Keygen's refusal of a usage change.
func (a *Agent) useError(lic *keygen.License, count int, err error) error {
	var kerr *keygen.Error
	if errors.As(err, &kerr) {
		switch {
		case kerr.Code == "USES_LIMIT_EXCEEDED":
			last := a.lastUsage(lic)
			return usesExceeded(last.MaxUses, last.Uses, count, "Keygen refused: "+nonEmpty(kerr.Detail, kerr.Title))
		case kerr.Status == 403 && count < 0:
			return &ipc.Error{Code: ipc.CodePermissionDenied,
				Message: "Keygen lets only admin and product tokens decrement a license's uses; the agent's license credentials may only increment them",
				Data:    map[string]any{"reason": "DECREMENT_NOT_ALLOWED"}}
		case kerr.Status == http.StatusConflict:
			return &ipc.Error{Code: ipc.CodeBusy,
				Message: "Keygen is busy with another update of this license's uses (409, tried 4 times); nothing was counted: retry",
				Data:    map[string]any{"reason": "USES_CONFLICT"}}
		case kerr.Code == "USES_INVALID":
			return &ipc.Error{Code: ipc.CodeInvalidRequest, Message: "Keygen refused: uses cannot go below zero", Data: map[string]any{"keygen_code": kerr.Code}}
		}
	}
	return mapKeygenError(err)
}

func usesExceeded(limit *int, uses, count int, msg string) *ipc.Error {
	data := map[string]any{"uses": uses, "count": count}
	if limit != nil {
		data["limit"] = *limit
	}
	return &ipc.Error{Code: ipc.CodeUsesExceeded, Message: msg, Data: data}
}

func (a *Agent) useOffline(v licenseView, count int) (*ipc.UseResult, error) {
	last := a.lastUsage(v.License)
	q := a.queuedUses(v.License.ID)
	counted := last.Uses + q.up
	if count > 0 && last.MaxUses != nil && counted+count > *last.MaxUses {
		return nil, usesExceeded(last.MaxUses, counted, count,
			fmt.Sprintf("offline: %d uses more would exceed the license's limit of %d (%d counted: the last count Keygen gave and the uses queued since)", count, *last.MaxUses, counted))
	}
	payload, _ := json.Marshal(usePayload{LicenseID: v.License.ID, Count: count})
	if _, err := a.store.Enqueue(cache.OutboxEntry{Kind: cache.OutboxUse, Payload: payload, Created: a.now()}); err != nil {
		return nil, ipc.Errorf(ipc.CodeInternal, "queueing the uses: %v", err)
	}
	a.sched.Set(schedKey{kind: schedOutbox}, a.now().Add(outboxRetry))
	if count > 0 {
		counted += count
	}
	return &ipc.UseResult{Uses: counted, MaxUses: last.MaxUses, Offline: true, Queued: q.net + count}, nil
}

// lastUsage is the newest count known for lic: the usage record, which
// every answer with a count updates (use answers, validations:
// noteUsage), else the license as last seen. Not the view's license when
// a record exists: offline it comes from a certificate that may be older
// than the record (model test seed 222: a restart offline took 0 uses
// from the license file while Keygen had counted 6, and accepted uses
// past maxUses).
func (a *Agent) lastUsage(lic *keygen.License) usageRecord {
	cur := usageRecord{LicenseID: lic.ID, Uses: lic.Uses, MaxUses: lic.MaxUses}
	rec, ok := a.usageRecord(lic.ID)
	if !ok {
		return cur
	}
	if cur.MaxUses == nil {
		// The view may come from a certificate without the limit; the
		// answer had it.
		cur.MaxUses = rec.MaxUses
	}
	cur.Uses = rec.Uses
	return cur
}

func (a *Agent) usageRecord(licenseID string) (usageRecord, bool) {
	raw, err := a.store.Meta(metaUsage)
	if err != nil || len(raw) == 0 {
		return usageRecord{}, false
	}
	var rec usageRecord
	if json.Unmarshal(raw, &rec) != nil || rec.LicenseID != licenseID {
		return usageRecord{}, false
	}
	return rec, true
}

// noteUsage records the count of a validation's license when it differs
// from the record (so a revalidation costs no cache write): the record is
// then always Keygen's newest count.
func (a *Agent) noteUsage(l *keygen.License) {
	if l == nil || l.ID == "" {
		return
	}
	if rec, ok := a.usageRecord(l.ID); ok && rec.Uses == l.Uses && equalPtr(rec.MaxUses, l.MaxUses) {
		return
	}
	a.recordUsage(l)
}

// recordUsage persists a usage answer, stamped on the clock lastSync uses.
func (a *Agent) recordUsage(l *keygen.License) {
	at, _ := a.trustedNow()
	b, _ := json.Marshal(usageRecord{LicenseID: l.ID, Uses: l.Uses, MaxUses: l.MaxUses, At: at})
	if err := a.store.PutMeta(metaUsage, b); err != nil {
		a.log.Warn("recording the use count", "err", err)
	}
}

type queued struct{ up, net int }

// queuedUses sums the uses queued for licenseID.
func (a *Agent) queuedUses(licenseID string) queued {
	var q queued
	entries, err := a.store.Outbox()
	if err != nil {
		return q
	}
	for _, e := range entries {
		if e.Kind != cache.OutboxUse {
			continue
		}
		var p usePayload
		if json.Unmarshal(e.Payload, &p) != nil || p.LicenseID != licenseID {
			continue
		}
		q.net += p.Count
		if p.Count > 0 {
			q.up += p.Count
		}
	}
	return q
}

// replayUse sends one queued use entry; stop is true when Keygen is
// unreachable (the entry stays queued). Refusals drop the entry with a
// warning: past maxUses, Keygen had counted more uses meanwhile (other
// machines); a decrement, the credentials may not decrement.
func (a *Agent) replayUse(ctx context.Context, e cache.OutboxEntry) (stop bool) {
	var p usePayload
	if err := json.Unmarshal(e.Payload, &p); err != nil || p.LicenseID == "" || p.Count == 0 {
		a.log.Warn("dropping an unreadable queued use entry", "seq", e.Seq)
		_ = a.store.Ack(e.Seq)
		return false
	}
	if v := a.view(); v.License == nil || v.License.ID != p.LicenseID {
		a.log.Warn("dropping uses queued for another license", "count", p.Count)
		_ = a.store.Ack(e.Seq)
		return false
	}
	a.usage.mu.Lock()
	defer a.usage.mu.Unlock()
	got, err := a.sendUses(ctx, p.LicenseID, p.Count)
	switch {
	case err == nil:
		a.recordUsage(got)
	case offline(err), usesConflict(err):
		// Kept for the next replay: unreachable, or the row stayed locked
		// by another update (409: nothing was counted).
		return true
	default:
		a.log.Warn("Keygen refused uses recorded while offline; dropping them", "count", p.Count, "err", err)
	}
	_ = a.store.Ack(e.Seq)
	return false
}
