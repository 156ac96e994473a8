package main

import (
	"testing"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/installer"
)

// The agent's shutdown ends leases within agent.LeaseStopBudget and then
// closes its connections and the cache; the service manager kills the
// process after installer.StopTimeout. The budget must leave time for the
// rest, or a stop would kill the agent with its cache open.
func TestLeaseStopBudgetLeavesTimeToCloseTheCache(t *testing.T) {
	const closeMargin = 1500 // ms for closing connections, scheduler and cache
	if got, limit := agent.LeaseStopBudget.Milliseconds()+closeMargin, installer.StopTimeout.Milliseconds(); got > limit {
		t.Fatalf("LeaseStopBudget %v + %dms > StopTimeout %v", agent.LeaseStopBudget, closeMargin, installer.StopTimeout)
	}
}
