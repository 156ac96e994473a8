package agent

import (
	"context"
	"slices"
	"sync"

	"github.com/keygen-agent/keygen-agent/cache"
)

// Who pays for a queued kill (issue 15, defect 3 follow-up).
//
// A kill is queued when its lease ended but Keygen could not be told:
// Keygen unreachable, or the lease's user had spent its share of the
// request budget (releaseLease). Keygen keeps counting that process until
// the kill is sent, so at the process limit another user's acquire (or an
// offline lease's replayed spawn) is refused for a seat nobody holds.
//
// Sending the kill on that user's behalf charged to the dead lease's user
// would make the acquiring user wait on someone else's share: a user who
// spends its share and lets its leases die would hold every later acquire
// for a whole window. Charging it to the acquiring user would make it pay
// for another user's leases. So a kill sent to free a seat for another
// user's request is charged to the agent (owner "": the global windows
// only, pings still go first); a kill of the requesting user's own lease
// stays on its own share, and those go first.
//
// The agent's cost is bounded by what the dead lease's user already paid:
// every queued kill ends a Keygen process whose spawn was charged to that
// user's share (online, or its offline spawn's replay), and each queued kill
// is sent at most once (claimed while in flight, acknowledged after), so a
// user can make the agent send at most as many kills as it made spawns.
// And freeSeat stops at the first kill Keygen accepts: an acquire refused
// for the limit costs the agent one kill, not the whole queue. The rest
// stay queued for the outbox replay, charged to their own users.

// outboxClaims marks outbox entries being sent, so that freeSeat and the
// replay never send the same kill twice at once.
type outboxClaims struct {
	mu sync.Mutex
	m  map[uint64]bool
}

func (c *outboxClaims) claim(seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[seq] {
		return false
	}
	if c.m == nil {
		c.m = map[uint64]bool{}
	}
	c.m[seq] = true
	return true
}

func (c *outboxClaims) release(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, seq)
}

// maxFreeSeatKills bounds the kills one freeSeat sends (Keygen may answer
// that a process is already gone, which frees nothing).
const maxFreeSeatKills = 3

// freeSeat sends queued kills until Keygen has accepted one, so that a
// spawn for user's request that Keygen refused for its process limit can be
// retried; it reports whether a kill went through. user's own kills go
// first, charged to its share; other users' kills are charged to the agent
// (see above). Nothing is sent for anyone else's share.
func (a *Agent) freeSeat(ctx context.Context, user string) bool {
	entries, err := a.store.Outbox()
	if err != nil {
		return false
	}
	var kills []cache.OutboxEntry
	for _, e := range entries {
		if e.Kind == cache.OutboxKill {
			kills = append(kills, e)
		}
	}
	// The user's own first, then oldest first.
	slices.SortStableFunc(kills, func(x, y cache.OutboxEntry) int {
		return boolInt(x.User != user) - boolInt(y.User != user)
	})
	sent := 0
	for _, e := range kills {
		if sent == maxFreeSeatKills {
			break
		}
		if !a.claims.claim(e.Seq) {
			continue // the replay is sending it
		}
		kctx := withBudgetOwner(ctx, e.User)
		if e.User != user {
			kctx = chargedToAgent(ctx)
		}
		err := a.killProcess(kctx, e.ProcessID)
		a.claims.release(e.Seq)
		sent++
		switch {
		case err == nil:
			_ = a.store.Ack(e.Seq)
			a.log.Info("sent a queued kill to free a seat", "process", e.ProcessID, "for_user", user, "lease_user", e.User)
			return true
		case offline(err) || ctx.Err() != nil:
			return false // still queued
		default:
			a.log.Warn("killing queued Keygen process", "process", e.ProcessID, "err", err)
			_ = a.store.Ack(e.Seq)
		}
	}
	return false
}
