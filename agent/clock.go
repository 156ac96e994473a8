package agent

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// Trusted time.
//
// The local clock may be wrong in either direction by any amount (a
// dead CMOS battery, a VM restored from a snapshot, an owner who rolls it
// back to stretch offline use), and so may a self-hosted Keygen's. The
// agent therefore keeps three things, in agentClock:
//
//   - offset: Keygen's clock minus the local clock, learned from every
//     license validation. A validation echoes the request's nonce
//     (validations_controller.rb puts meta.nonce in the signed body), so
//     its signed Date is Keygen's time at the call whatever either clock
//     says. Local time plus offset ("corrected time") is what the replay
//     window of every other answer is checked against
//     (keygen.Config.TrustedNow) and what certificates, the offline
//     window and last_sync are measured on. Online, Keygen's signed
//     answers rule: any local error is absorbed by the offset and shown as
//     clock_skew in status and doctor, never as a lock-out.
//   - watermark: the latest signed time seen. It advances only from signed
//     sources (verified response Dates, machine files' issued times), and
//     only up to corrected time plus maxAhead, so that no one answer can
//     put it far in the future; a validation sets it to its Date (also
//     backwards: a server whose clock was fixed).
//   - localHigh: the latest corrected local reading since the last
//     validation. Offline, corrected time behind max(watermark, localHigh)
//     by more than clock_tolerance is a clock rolled back: the agent
//     reports clock_tampered and grants nothing, so a rollback cannot
//     extend offline use. A clock set forward offline only ends offline
//     use sooner, and the next validation online resets localHigh, so it
//     cannot lock a machine out once Keygen is reachable again.
//
// All three are persisted (meta key clockMetaKey) so that a restart,
// offline, neither forgets the offset nor reopens a rolled-back window.

// maxAhead bounds how far ahead of corrected time a signed Date or a
// certificate's issued time may move the watermark: Keygen's replay window
// (keygen.Config.MaxClockDrift's default).
const maxAhead = 5 * time.Minute

// clockMetaKey is the cache meta key holding the persisted clock state.
const clockMetaKey = "trusted_clock"

// persistStep is how far the watermark or localHigh must move before they
// are written to the cache again: bounds bbolt writes to one a minute.
const persistStep = time.Minute

// clockRecord is the persisted form of agentClock.
type clockRecord struct {
	Watermark   time.Time     `json:"watermark"`
	LocalHigh   time.Time     `json:"local_high"`
	Offset      time.Duration `json:"offset_ns"`
	OffsetKnown bool          `json:"offset_known"`
	// OffsetAt is corrected time at the validation the offset came from.
	OffsetAt time.Time `json:"offset_at,omitzero"`
	// Slack is how far off the offset may be: an HTTP Date has whole
	// seconds and Keygen stamped it somewhere between the send and the
	// receive, so corrected time can trail a signed Date by up to half the
	// round trip plus a second without any clock having moved.
	Slack time.Duration `json:"slack_ns,omitempty"`
}

// minSlack is the offset's uncertainty when no round trip is known: the
// Date header's one-second resolution.
const minSlack = time.Second

// agentClock is the agent's trusted time. Its zero value is not usable:
// build it with newAgentClock.
type agentClock struct {
	local func() time.Time

	mu        sync.Mutex
	rec       clockRecord
	persisted clockRecord // what the cache holds
	// save writes a record (nil: never persisted, e.g. before Run).
	save func(clockRecord) error
}

func newAgentClock(local func() time.Time) *agentClock {
	return &agentClock{local: local}
}

// load restores a persisted record; legacy is the watermark an older agent
// kept (local readings included), taken as localHigh.
func (c *agentClock) load(b []byte, legacy time.Time, save func(clockRecord) error) {
	var rec clockRecord
	if len(b) > 0 {
		if err := json.Unmarshal(b, &rec); err != nil {
			rec = clockRecord{}
		}
	}
	if len(b) == 0 && !legacy.IsZero() {
		rec.LocalHigh = legacy
	}
	c.mu.Lock()
	if rec.Watermark.After(c.rec.Watermark) {
		c.rec.Watermark = rec.Watermark
	}
	if rec.LocalHigh.After(c.rec.LocalHigh) {
		c.rec.LocalHigh = rec.LocalHigh
	}
	if rec.OffsetKnown && !c.rec.OffsetKnown {
		c.rec.Offset, c.rec.OffsetKnown, c.rec.OffsetAt = rec.Offset, true, rec.OffsetAt
	}
	c.persisted = rec
	c.save = save
	c.mu.Unlock()
}

// now is corrected time: the local clock plus the learned offset.
func (c *agentClock) now() time.Time {
	l := c.local()
	c.mu.Lock()
	defer c.mu.Unlock()
	return l.Add(c.rec.Offset)
}

// observeValidation learns the offset from a nonce-bound validation:
// Keygen's Date against the middle of the local send and receive times.
// An HTTP Date has whole seconds, so Keygen's clock was in
// [Date, Date+1s): half a second is added.
func (c *agentClock) observeValidation(v *keygen.Validation) {
	if v == nil || v.Date.IsZero() || v.Sent.IsZero() || v.Received.Before(v.Sent) {
		return
	}
	mid := v.Sent.Add(v.Received.Sub(v.Sent) / 2)
	server := v.Date.Add(500 * time.Millisecond)
	c.mu.Lock()
	c.rec.Offset = server.Sub(mid).Round(time.Second / 10)
	c.rec.OffsetKnown, c.rec.OffsetAt = true, v.Date
	c.rec.Slack = v.Received.Sub(v.Sent)/2 + minSlack
	c.rec.Watermark, c.rec.LocalHigh = v.Date, v.Date
	c.mu.Unlock()
	c.persist(true)
}

// observeSigned advances the watermark to a signed time (a verified
// response Date, a machine file's issued time), bounded at corrected time
// plus maxAhead.
func (c *agentClock) observeSigned(t time.Time) {
	if t.IsZero() {
		return
	}
	l := c.local()
	c.mu.Lock()
	if limit := l.Add(c.rec.Offset + maxAhead); t.After(limit) {
		t = limit
	}
	moved := t.After(c.rec.Watermark)
	if moved {
		c.rec.Watermark = t
	}
	c.mu.Unlock()
	if moved {
		c.persist(false)
	}
}

// check reads corrected time, records it in localHigh, and returns it with
// how far it is behind the trusted floor (max of watermark and localHigh;
// 0 when not behind). When behind, now is the floor: time measured for
// offline use never runs backwards.
func (c *agentClock) check() (now time.Time, behind time.Duration) {
	l := c.local()
	c.mu.Lock()
	now = l.Add(c.rec.Offset)
	floor := c.rec.Watermark
	if c.rec.LocalHigh.After(floor) {
		floor = c.rec.LocalHigh
	}
	if now.Before(floor) {
		c.mu.Unlock()
		return floor, floor.Sub(now)
	}
	moved := now.After(c.rec.LocalHigh)
	if moved {
		c.rec.LocalHigh = now
	}
	c.mu.Unlock()
	if moved {
		c.persist(false)
	}
	return now, 0
}

// slack is how far corrected time may trail trusted time from the
// offset's own uncertainty (clockRecord.Slack), at least minSlack.
func (c *agentClock) slack() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.rec.Slack, minSlack)
}

// skew is the learned offset (Keygen's clock minus the local clock) and
// whether one was learned.
func (c *agentClock) skew() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rec.Offset, c.rec.OffsetKnown
}

// snapshot returns the current record (tests, doctor).
func (c *agentClock) snapshot() clockRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rec
}

// persist writes the record when forced or when a time moved by
// persistStep since the last write.
func (c *agentClock) persist(force bool) {
	c.mu.Lock()
	rec, old, save := c.rec, c.persisted, c.save
	due := force || rec.Watermark.Sub(old.Watermark) >= persistStep || rec.LocalHigh.Sub(old.LocalHigh) >= persistStep
	if due && save != nil {
		c.persisted = rec
	}
	c.mu.Unlock()
	if due && save != nil {
		_ = save(rec) // the caller's save logs its own failure
	}
}

// advanceWatermark takes a signed time (verified response Date, machine
// file issued time) into trusted time. Kept for the callers of the
// former state.go watermark.
func (a *Agent) advanceWatermark(t time.Time) { a.clock.observeSigned(t) }

// trustedNow is corrected time and how far it is behind the trusted floor
// (0 if not behind); see agentClock.check.
func (a *Agent) trustedNow() (now time.Time, behind time.Duration) { return a.clock.check() }

// loadClock restores the persisted clock state from the cache.
func (a *Agent) loadClock() {
	b, _ := a.store.Meta(clockMetaKey)
	var legacy time.Time
	if len(b) == 0 {
		legacy, _ = a.store.Watermark()
	}
	store := a.store
	a.clock.load(b, legacy, func(rec clockRecord) error {
		raw, err := json.Marshal(rec)
		if err == nil {
			err = store.PutMeta(clockMetaKey, raw)
		}
		if err != nil {
			a.log.Warn("persisting trusted time", "err", err)
		}
		return err
	})
}

// clockSkewThreshold is how far the local clock may differ from Keygen's
// before status and doctor warn: a minute (a clock kept by NTP is within
// seconds), or clock_tolerance when that is smaller.
func (a *Agent) clockSkewThreshold() time.Duration {
	if tol := a.config().ClockTolerance.D(); tol > 0 && tol < time.Minute {
		return tol
	}
	return time.Minute
}

// dateOutOfWindow: a verified answer's Date was outside the replay window
// on corrected time: a replay, or the local clock moved since the offset
// was learned.
func dateOutOfWindow(err error) bool {
	return errors.Is(err, keygen.ErrResponseTooOld) || errors.Is(err, keygen.ErrResponseFromFuture)
}

// relearnClock learns the clock offset again from a nonce-bound validation
// (fresh whatever the clocks say) and reports whether it did. A replayed
// answer fails again on the corrected clock; an answer refused because
// the local clock jumped passes.
func (a *Agent) relearnClock(ctx context.Context) bool {
	key, fp := a.licenseKey(), a.fp.Load()
	c := a.client()
	if key == "" || fp == nil || c == nil {
		return false
	}
	v, err := c.ValidateKey(ctx, key, keygen.ValidateOptions{Fingerprint: fp.Fingerprint})
	if err != nil || v.Date.IsZero() {
		return false
	}
	before, _ := a.clock.skew()
	a.clock.observeValidation(v)
	after, _ := a.clock.skew()
	a.log.Info("local clock moved; relearned Keygen's time", "offset_before", before, "offset", after)
	a.observeLicenseRefusal(v)
	return true
}

// observeLicenseRefusal acts on a verified, nonce-bound validation made
// for another purpose (relearnClock's): when it refuses the license itself
// the state changes at once and the license loop revalidates, as for any
// other signed refusal (model test: a license deleted under a skewed Date
// was answered NOT_FOUND here and the status stayed active,
// I4/status-valid-after-signed-invalid-online). Only the codes
// license_validation_service.rb returns before it looks at any scope
// count: the scopes of this validation are not the license loop's.
func (a *Agent) observeLicenseRefusal(v *keygen.Validation) {
	if v == nil || v.Valid {
		return
	}
	view := licenseView{Online: true, License: v.License, Code: v.Code, Detail: v.Detail}
	switch {
	case v.License == nil || v.Code == "NOT_FOUND":
		view.State, view.Code, view.Detail = StateInvalid, nonEmpty(v.Code, "NOT_FOUND"), "Keygen does not know this license key"
	case v.Code == "BANNED" || v.Code == "SUSPENDED" || v.Code == "EXPIRED" || v.Code == "OVERDUE":
		view.State = verdictState(v.Code, false)
		view.Detail = withRemedy(v.Detail, v.Code)
	default:
		return
	}
	a.fire(evVerdict, view)
	a.kickLicenseLoop()
}

// clockSkew is status's clock_skew: set when the learned offset exceeds
// clockSkewThreshold.
func (a *Agent) clockSkew() *ipc.ClockSkew {
	off, ok := a.clock.skew()
	if !ok {
		return nil
	}
	abs := off
	if abs < 0 {
		abs = -abs
	}
	if abs <= a.clockSkewThreshold() {
		return nil
	}
	dir := "behind"
	if off < 0 {
		dir = "ahead of"
	}
	return &ipc.ClockSkew{
		Seconds: off.Seconds(),
		Detail: "the system clock is " + abs.Round(time.Second).String() + " " + dir +
			" Keygen's; licensing uses Keygen's time while online, but correct the clock (enable time sync) for offline use",
	}
}
