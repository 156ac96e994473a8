package agent

import (
	crand "crypto/rand"
	"encoding/hex"
	"io"
	"sync"
)

// metaAgentID is the cache meta key of this agent instance's id.
const metaAgentID = "agent_id"

// instance is this agent's identity among the agents that may serve the
// same license on the same machine (a system and a per-user agent, or two
// installs): a random id, created with the cache and kept in it, written
// into every Keygen process this agent spawns (metadata "agentId"). An
// agent reaps only processes carrying its own id (issue 14 defect 8).
type instance struct {
	mu sync.Mutex
	id string
}

// agentID returns this agent's id, creating and persisting it on first
// use. It needs the cache (after init).
func (a *Agent) agentID() string {
	in := &a.leases.instance
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.id != "" {
		return in.id
	}
	if b, err := a.store.Meta(metaAgentID); err == nil && len(b) > 0 {
		in.id = string(b)
		return in.id
	}
	var b [8]byte
	if _, err := io.ReadFull(a.deps.IDs, b[:]); err != nil {
		_, _ = crand.Read(b[:])
	}
	id := "agent_" + hex.EncodeToString(b[:])
	if err := a.store.PutMeta(metaAgentID, []byte(id)); err != nil {
		// Keep it for this run; the next start gets another id and its
		// processes from this run look foreign: Keygen culls them.
		a.log.Warn("persisting the agent id", "err", err)
	}
	in.id = id
	return in.id
}

// ownedBy reports whether a Keygen process with this metadata belongs to
// the agent with id self. Processes without an agent id were spawned by an
// agent from before the id existed, which can only be this one's earlier
// run on this cache: they count as its own.
func ownedBy(md map[string]any, self string) (owner string, own bool) {
	owner, _ = md["agentId"].(string)
	return owner, owner == "" || owner == self
}
