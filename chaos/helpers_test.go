package chaos

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
)

func intp(n int) *int { return &n }

// agentConfigNoBudget lifts the agent's request budget for tests that
// churn leases faster than Keygen Cloud's limits allow.
func agentConfigNoBudget() agent.Config {
	return agent.Config{RateLimit: agent.RateLimitConfig{PerShort: 100_000, PerLong: 1_000_000}}
}

// startEnv creates and starts an Env that is closed when the test ends.
func startEnv(t *testing.T, o Options) *Env {
	t.Helper()
	e, err := NewEnv(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		if t.Failed() {
			t.Logf("agent log (tail):\n%s", e.Logs.Tail(40))
		}
	})
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	return e
}

// app is one app instance: a connection holding (or not) a lease.
type app struct {
	c     *agenttest.Client
	lease string
	res   *ipc.AcquireResult
}

// acquire dials a new app and takes a lease; it fails the test on error.
func acquire(t *testing.T, e *Env) *app {
	t.Helper()
	a, code, err := tryAcquire(e)
	if err != nil {
		t.Fatalf("acquire: %s %v", code, err)
	}
	return a
}

func tryAcquire(e *Env) (*app, string, error) {
	c, err := e.Dial()
	if err != nil {
		return nil, "", err
	}
	r, code, err := c.Acquire(AppParams())
	if err != nil {
		c.Close()
		return nil, code, err
	}
	return &app{c: c, lease: r.LeaseID, res: r}, "", nil
}

// settled checks the end-state invariants: the devserver holds exactly one
// live process per lease of a live app (matched by the leaseId metadata
// the agent writes), no live app was told its lease was revoked, and the
// agent reports as many active leases.
func settled(e *Env, live []*app) error {
	var want []string
	for _, a := range live {
		if n := a.c.Revoked(); n > 0 {
			return fmt.Errorf("live app with lease %s got %d lease.revoked", a.lease, n)
		}
		want = append(want, a.lease)
	}
	var got []string
	for _, p := range e.Srv.Processes() {
		if p.Status != "ALIVE" {
			return fmt.Errorf("process %s (lease %v) is %s", p.ID, p.Metadata["leaseId"], p.Status)
		}
		id, _ := p.Metadata["leaseId"].(string)
		got = append(got, id)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		return fmt.Errorf("server processes for leases %v, want one per live lease %v", got, want)
	}
	st, err := e.StatusDirect()
	if err != nil {
		return err
	}
	if st.Leases.Active != len(live) {
		return fmt.Errorf("agent reports %d active leases, want %d", st.Leases.Active, len(live))
	}
	return nil
}

// waitSettled polls settled on the (fake) clock until it holds.
func waitSettled(t *testing.T, e *Env, live []*app, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for {
		if err = settled(e, live); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled after %v: %v", within, err)
		}
		time.Sleep(time.Second)
	}
}

// checkLimit asserts the monitor never saw more processes than limit.
func checkLimit(t *testing.T, m *Monitor, limit int) {
	t.Helper()
	m.Stop()
	server, active := m.Max()
	if server > limit {
		t.Errorf("devserver held %d processes for the machine at once; maxProcesses is %d", server, limit)
	}
	if active > limit {
		t.Errorf("agent reported %d active leases at once; maxProcesses is %d", active, limit)
	}
	if m.Samples < 2 {
		t.Errorf("monitor took %d samples", m.Samples)
	}
}

// noPanics fails the test if the agent logged a recovered panic.
func noPanics(t *testing.T, e *Env) {
	t.Helper()
	if l := e.Logs.String(); strings.Contains(l, "panic") {
		t.Errorf("agent logged a panic:\n%s", e.Logs.Tail(30))
	}
}

func closeAll(apps []*app) {
	for _, a := range apps {
		a.c.Close()
	}
}
