package agent

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// The model test's events (see model_test.go). An event is pure data drawn
// from the seed before the run: its parameters never depend on what the
// agent did, so a trace minus some events is still a valid trace (this is
// what makes minimising possible) and the same seed replays it.

type evKind int

const (
	evAdvance       evKind = iota // fake time passes
	evAppStart                    // a new app starts and acquires (no wait)
	evAppStartWait                // a new app starts and acquires, waiting for a seat
	evAppExit                     // an app releases, closes and exits
	evAppCrash                    // an app dies: its connection closes, no release
	evForkExit                    // an app forks and exits: the child keeps the connection
	evChildAcquire                // a forked child acquires over the dead parent's connection
	evRelease                     // an app releases its lease and keeps running
	evReacquire                   // a running app without a lease acquires again
	evAgentCrash                  // kill -9: no shutdown, the cache is reopened by the next start
	evAgentRestart                // clean stop and start
	evOutage                      // Keygen refuses connections
	ev5xx                         // every answer is an unsigned 5xx
	ev429                         // every answer is 429
	evLatency                     // Keygen answers slowly
	evBadSig                      // answers carry a corrupt signature
	evDateSkew                    // signed answers carry a skewed Date
	evFaultsClear                 // Keygen is healthy again
	evClockJump                   // the local clock jumps
	evClockFix                    // the local clock is correct again
	evSuspend                     // the license is suspended in Keygen
	evReinstate                   // the license is reinstated
	evExpire                      // the license expires
	evRenew                       // the license is renewed
	evDelete                      // the license is deleted (rare: for good)
	evLimitDown                   // max processes goes down by one
	evLimitUp                     // max processes goes up by one
	evHeartbeat                   // the policy's heartbeat duration changes
	evActivateWrong               // an admin activates with a mistyped key
	evActivateRight               // an admin activates with the right key
	evDeactivate                  // an admin deactivates (online or, under a fault, offline)
	evConfigEdit                  // the config file changes (revalidate interval, log level)
	evImportGood                  // an admin imports this machine's current machine file
	evImportExpired               // an admin imports an old (1 h TTL) machine file
	evImportOther                 // an admin imports another machine's file
	evUse                         // an app records 1-3 uses (license.use)
	evUseDecr                     // an app takes a use back (license.use, count -1)
	evEntDetach                   // an entitlement is detached from the license in Keygen
	evEntAttach                   // an entitlement is attached (again) to the license
	evCount
)

var evNames = [...]string{
	"advance", "app-start", "app-start-wait", "app-exit", "app-crash", "fork-exit", "child-acquire",
	"release", "reacquire", "agent-crash", "agent-restart", "outage", "5xx-burst", "429-storm", "latency",
	"bad-signature", "date-skew", "faults-clear", "clock-jump", "clock-fix", "suspend", "reinstate", "expire",
	"renew", "delete", "limit-down", "limit-up", "heartbeat", "activate-wrong", "activate-right", "deactivate",
	"config-edit", "import-good", "import-expired", "import-other", "use", "use-decrement", "entitlement-detach",
	"entitlement-attach",
}

func (k evKind) String() string {
	if k >= 0 && int(k) < len(evNames) {
		return evNames[k]
	}
	return fmt.Sprintf("ev(%d)", int(k))
}

// eventWeights: how often each event is drawn.
var eventWeights = [evCount]int{
	evAdvance: 30, evAppStart: 10, evAppStartWait: 3, evAppExit: 5, evAppCrash: 3, evForkExit: 2,
	evChildAcquire: 2, evRelease: 3, evReacquire: 3, evAgentCrash: 2, evAgentRestart: 2,
	evOutage: 3, ev5xx: 2, ev429: 2, evLatency: 2, evBadSig: 2, evDateSkew: 2, evFaultsClear: 8,
	evClockJump: 2, evClockFix: 3, evSuspend: 2, evReinstate: 3, evExpire: 1, evRenew: 2,
	evDelete:    0, // drawn separately, rarely: it ends the license for the rest of the sequence
	evLimitDown: 2, evLimitUp: 2, evHeartbeat: 2, evActivateWrong: 2, evActivateRight: 2,
	evDeactivate: 1, evConfigEdit: 1, evImportGood: 1, evImportExpired: 1, evImportOther: 1,
	// Issue 16's features, in proportion: about as often as the other
	// admin and app events, so a sequence costs about the same.
	evUse: 3, evUseDecr: 1, evEntDetach: 1, evEntAttach: 1,
}

type modelEvent struct {
	kind evKind
	n    int           // selector (which app) or value (heartbeat seconds)
	d    time.Duration // duration (advance, wait, latency, skew, clock jump)
}

func (e modelEvent) String() string {
	switch e.kind {
	case evAdvance, evLatency, evDateSkew, evClockJump:
		return fmt.Sprintf("%s(%v)", e.kind, e.d)
	case evAppStartWait:
		return fmt.Sprintf("%s(wait %v)", e.kind, e.d)
	case evHeartbeat:
		return fmt.Sprintf("%s(%ds)", e.kind, e.n)
	case evAppExit, evAppCrash, evForkExit, evChildAcquire, evRelease, evReacquire:
		return fmt.Sprintf("%s(#%d)", e.kind, e.n)
	case evAppStart:
		if ents := appEntitlements(e.n); ents != nil {
			return fmt.Sprintf("%s(entitlements %v)", e.kind, ents)
		}
	case evUse:
		return fmt.Sprintf("%s(%d)", e.kind, useCount(e.n))
	case evEntDetach, evEntAttach:
		return fmt.Sprintf("%s(%s)", e.kind, entCode(e.n))
	}
	return e.kind.String()
}

// modelEntMissing is an entitlement code the license never has.
const modelEntMissing = "FEATURE_X"

// appEntitlements: the entitlements an app-start asks for (drawn with the
// event): four in ten starts are gated.
func appEntitlements(n int) []string {
	switch (n >> 4) % 10 {
	case 0:
		return []string{"FEATURE_A"}
	case 1:
		return []string{"FEATURE_A", "FEATURE_B"}
	case 2:
		return []string{"FEATURE_B"}
	case 3:
		return []string{modelEntMissing}
	}
	return nil
}

// useCount: how many uses an evUse records.
func useCount(n int) int { return 1 + n%3 }

// entCode: which entitlement an attach/detach event is about.
func entCode(n int) string { return []string{"FEATURE_A", "FEATURE_B"}[n%2] }

// modelVariant is what a whole sequence runs under, drawn from its seed on
// a stream of its own (so the events of a seed do not depend on it).
type modelVariant struct {
	licenseOnly bool          // activation = "none": no machine, no Keygen processes
	checkIn     bool          // the policy requires a daily check-in
	checkInLead time.Duration // check-in variant: the first check-in is due this long after the start
	maxUses     int           // the policy's maxUses
}

func (v modelVariant) String() string {
	s := fmt.Sprintf("maxUses=%d", v.maxUses)
	if v.licenseOnly {
		s += " license-only"
	}
	if v.checkIn {
		s += fmt.Sprintf(" check-in(first due in %v)", v.checkInLead)
	}
	return s
}

func drawVariant(seed uint64) modelVariant {
	r := rand.New(rand.NewPCG(seed, 0x76617269616e74)) // "variant"
	v := modelVariant{maxUses: 6 + r.IntN(10)}
	v.licenseOnly = r.IntN(4) == 0
	v.checkIn = r.IntN(4) == 0
	// From inside the agent's check-in margin (checked in at the first
	// sync) to well past it (checked in mid-sequence, maybe offline).
	v.checkInLead = time.Duration(30+r.IntN(12*60)) * time.Minute
	return v
}

// genEvents draws n events from seed.
func genEvents(seed uint64, n int) []modelEvent {
	r := rand.New(rand.NewPCG(seed, 0x6b657967656e)) // "keygen"
	total := 0
	for _, w := range eventWeights {
		total += w
	}
	evs := make([]modelEvent, 0, n)
	for len(evs) < n {
		if r.IntN(400) == 0 {
			evs = append(evs, modelEvent{kind: evDelete})
			continue
		}
		x := r.IntN(total)
		k := evKind(0)
		for ; x >= eventWeights[k]; k++ {
			x -= eventWeights[k]
		}
		e := modelEvent{kind: k, n: r.IntN(1 << 16)}
		switch k {
		case evAdvance:
			switch p := r.IntN(10); {
			case p < 4:
				e.d = time.Duration(1+r.IntN(60)) * time.Second
			case p < 8:
				e.d = time.Duration(1+r.IntN(10)) * time.Minute
			default:
				e.d = time.Duration(10+r.IntN(50)) * time.Minute
			}
		case evAppStartWait:
			e.d = time.Duration(1+r.IntN(60)) * time.Second
		case evLatency:
			e.d = time.Duration(1+r.IntN(8)) * time.Second
		case evDateSkew:
			e.d = time.Duration(1+r.IntN(180)) * time.Minute
			if r.IntN(2) == 0 {
				e.d = -e.d
			}
		case evClockJump:
			if r.IntN(10) == 0 {
				e.d = 365 * 24 * time.Hour
			} else {
				e.d = time.Duration(1+r.IntN(180)) * time.Minute
			}
			if r.IntN(2) == 0 {
				e.d = -e.d
			}
		case evHeartbeat:
			e.n = []int{60, 120, 300, 600}[r.IntN(4)]
		}
		evs = append(evs, e)
	}
	return evs
}
