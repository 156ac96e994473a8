package agent

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/ipc"
)

// Limits on what one lease.acquire may make the agent hold (and send to
// Keygen with the process). The ipc server bounds lines, queues and
// requests in flight per user; these bound the fields themselves.
const (
	// MaxMetadataBytes is the largest lease.acquire metadata, as JSON.
	MaxMetadataBytes = 4 << 10
	// MaxAppField is the longest app or app_version string.
	MaxAppField = 256
	// MaxWaitMS is the longest wait_ms honoured; longer waits are cut to it.
	MaxWaitMS = 5 * 60 * 1000
)

// checkAcquireParams rejects oversized fields with INVALID_REQUEST and cuts
// wait_ms to MaxWaitMS.
func checkAcquireParams(p *ipc.AcquireParams) error {
	if p.WaitMS < 0 {
		return ipc.Errorf(ipc.CodeInvalidRequest, "wait_ms must not be negative")
	}
	if p.WaitMS > MaxWaitMS {
		p.WaitMS = MaxWaitMS
	}
	if len(p.App) > MaxAppField || len(p.AppVersion) > MaxAppField {
		return &ipc.Error{Code: ipc.CodeInvalidRequest, Message: "app and app_version must be at most 256 bytes",
			Data: map[string]any{"max": MaxAppField}}
	}
	if p.Metadata != nil {
		b, err := json.Marshal(p.Metadata)
		if err != nil || len(b) > MaxMetadataBytes {
			return &ipc.Error{Code: ipc.CodeInvalidRequest, Message: "metadata must be at most 4 KiB of JSON",
				Data: map[string]any{"max": MaxMetadataBytes}}
		}
	}
	return nil
}

type budgetOwnerKey struct{}

// withBudgetOwner charges the Keygen requests made with ctx to uid's share
// (a lease's kill, made after its holder's request returned).
func withBudgetOwner(ctx context.Context, uid string) context.Context {
	if uid == "" {
		return ctx
	}
	return context.WithValue(ctx, budgetOwnerKey{}, uid)
}

type (
	agentChargeKey struct{}
	withinShareKey struct{}
)

// chargedToAgent charges the Keygen requests made with ctx to the agent
// (""), whoever's request ctx serves: the kills sent to free a seat that
// another user's request needs (freeSeat). The waiting user must not wait
// on the share of the user whose dead lease holds the seat.
func chargedToAgent(ctx context.Context) context.Context {
	return context.WithValue(ctx, agentChargeKey{}, true)
}

// withinShare makes the Keygen requests made with ctx fail at once with
// errShareSpent, instead of waiting, when their owner's share of the budget
// is spent. For requests that someone else waits behind: a release's kill
// (the seat is handed on only after it) and the outbox replay (one user's
// entry would hold up every later one).
func withinShare(ctx context.Context) context.Context {
	return context.WithValue(ctx, withinShareKey{}, true)
}

// errShareSpent: a withinShare request's owner has used its share. Like
// errBudgetWait, offline-class for the caller (the work is queued).
var errShareSpent = fmt.Errorf("%w: %w", budget.ErrShareSpent, errBudgetWait)

// budgetOwner is whose share of the request budget a Keygen request made
// with ctx uses: the uid of the local peer whose request it serves (the
// ipc server puts the peer in every handler's context), or "" for the
// agent's own work (pings, revalidations) and for what chargedToAgent marks.
func budgetOwner(ctx context.Context) string {
	if ok, _ := ctx.Value(agentChargeKey{}).(bool); ok {
		return ""
	}
	if uid, ok := ctx.Value(budgetOwnerKey{}).(string); ok {
		return "uid:" + uid
	}
	if p, ok := ipc.PeerFromContext(ctx); ok {
		return "uid:" + p.UID
	}
	return ""
}

// storeFault is the cache's OnFault: agent.db changed under the running
// agent and the store is unusable. Stop (Run returns the error, the daemon
// exits non-zero) so the service manager restarts the agent into Open's
// quarantine, rather than serve from a cache that fails every call.
func (a *Agent) storeFault(err error) {
	a.log.Error("the cache file was damaged while the agent ran; stopping so a restart sets it aside", "err", err)
	if a.abort != nil {
		a.abort(err)
	}
}
