package agent

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

func usesError(t *testing.T, err error) map[string]any {
	t.Helper()
	var ie *ipc.Error
	if !errors.As(err, &ie) || ie.Code != ipc.CodeUsesExceeded {
		t.Fatalf("err %v, want USES_EXCEEDED", err)
	}
	m, _ := ie.Data.(map[string]any)
	return m
}

func (e *env) keygenUses() int {
	l, _ := e.srv.License(e.license.ID)
	return l.Uses
}

// TestUseOnline: license.use is Keygen's increment-usage; past maxUses
// Keygen's USES_LIMIT_EXCEEDED is USES_EXCEEDED with the limit; a
// decrement with the license's credentials is Keygen's 403, mapped to
// PERMISSION_DENIED.
func TestUseOnline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxUses: intp(5)}})
		e.procs.Spawn(700)
		c := e.dial(agenttest.PeerFor(700))
		defer c.Close()
		var r ipc.UseResult
		if code, err := c.Call(ipc.MethodUse, nil, &r); err != nil {
			t.Fatalf("%s %v", code, err)
		}
		if r.Uses != 1 || r.MaxUses == nil || *r.MaxUses != 5 || r.Offline {
			t.Fatalf("result %+v", r)
		}
		if code, err := c.Call(ipc.MethodUse, ipc.UseParams{Count: 3}, &r); err != nil || r.Uses != 4 {
			t.Fatalf("%s %v %+v", code, err, r)
		}
		if code, _ := c.Call(ipc.MethodUse, ipc.UseParams{Count: 2}, nil); code != ipc.CodeUsesExceeded {
			t.Fatalf("past the limit: code %q", code)
		}
		_, err := e.a.use(t.Context(), 2)
		if d := usesError(t, err); d["limit"] != 5 || d["count"] != 2 || d["uses"] != 4 {
			t.Errorf("data %v", d)
		}
		if got := e.keygenUses(); got != 4 {
			t.Errorf("Keygen counts %d uses, want 4", got)
		}
		if code, _ := c.Call(ipc.MethodUse, ipc.UseParams{Count: -1}, nil); code != ipc.CodePermissionDenied {
			t.Errorf("decrement with license credentials: code %q", code)
		}
		if code, _ := c.Call(ipc.MethodUse, map[string]any{"count": "two"}, nil); code != ipc.CodeInvalidRequest {
			t.Errorf("bad count: code %q", code)
		}
	})
}

// TestUseOffline: offline, uses are queued, the limit is enforced from
// the last count Keygen gave plus the queued uses (also across a
// restart), and the queue is sent once Keygen is back.
func TestUseOffline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxUses: intp(5)}, cfg: Config{OfflineGrace: Duration(72 * time.Hour)}})
		if _, err := e.a.use(t.Context(), 2); err != nil {
			t.Fatal(err)
		}
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		if err := e.a.requestSync(t.Context()); err == nil {
			t.Fatal("sync succeeded with Keygen refusing connections")
		}
		r, err := e.a.use(t.Context(), 2)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Offline || r.Uses != 4 || r.Queued != 2 {
			t.Fatalf("offline result %+v", r)
		}
		// 2 answered + 2 queued + 2 > 5.
		if d := usesError(t, func() error { _, err := e.a.use(t.Context(), 2); return err }()); d["limit"] != 5 || d["uses"] != 4 {
			t.Errorf("data %v", d)
		}
		// A queued decrement frees nothing until Keygen accepts it.
		if _, err := e.a.use(t.Context(), -1); err != nil {
			t.Fatal(err)
		}
		usesError(t, func() error { _, err := e.a.use(t.Context(), 2); return err }())
		if got := e.keygenUses(); got != 2 {
			t.Fatalf("Keygen counts %d uses while offline, want 2", got)
		}

		// The limit survives a restart (last answer persisted, queue in the outbox).
		e.stop()
		e.start()
		e.waitFor("offline after restart", func() bool { return e.status().State == string(StateOffline) })
		usesError(t, func() error { _, err := e.a.use(t.Context(), 2); return err }())
		if r, err := e.a.use(t.Context(), 1); err != nil || r.Uses != 5 {
			t.Fatalf("last use under the limit: %+v %v", r, err)
		}

		e.srv.SetFaults(devserver.Faults{})
		if err := e.a.requestSync(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.waitFor("queue replayed", func() bool {
			out, _ := e.a.store.Outbox()
			for _, x := range out {
				if x.Kind == cache.OutboxUse {
					return false
				}
			}
			return true
		})
		// 2 + 2 + 1 sent; the decrement refused by Keygen (license bearer) and dropped.
		if got := e.keygenUses(); got != 5 {
			t.Errorf("Keygen counts %d uses after the replay, want 5", got)
		}
		usesError(t, func() error { _, err := e.a.use(t.Context(), 1); return err }())
	})
}

// Keygen locks the license row FOR UPDATE NOWAIT for a use and answers 409
// when another update (another machine's use) holds it. The agent sends
// the use again after a short pause; when the row stays locked the app is
// told BUSY (retry), never LICENSE_INVALID, and the license stays valid.
// Before, the 409 was "Keygen refused" LICENSE_INVALID on the first try.
func TestUseRetriesKeygenConflict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxUses: intp(5)}})
		e.procs.Spawn(700)
		c := e.dial(agenttest.PeerFor(700))
		defer c.Close()

		// Another machine's update holds the row for 150 ms.
		unlock := e.srv.LockUses(e.license.ID)
		go func() {
			time.Sleep(150 * time.Millisecond)
			unlock()
		}()
		var r ipc.UseResult
		if code, err := c.Call(ipc.MethodUse, ipc.UseParams{Count: 2}, &r); err != nil {
			t.Fatalf("use during a short conflict: %s %v", code, err)
		}
		if r.Uses != 2 || e.keygenUses() != 2 {
			t.Fatalf("result %+v, Keygen counts %d; want 2 counted once", r, e.keygenUses())
		}

		// The row stays locked: BUSY after the retries, nothing counted.
		unlock = e.srv.LockUses(e.license.ID)
		defer unlock()
		code, err := c.Call(ipc.MethodUse, nil, nil)
		if code != ipc.CodeBusy {
			t.Fatalf("use while the row stays locked: code %q (%v), want BUSY", code, err)
		}
		if got := e.keygenUses(); got != 2 {
			t.Errorf("Keygen counts %d uses, want 2", got)
		}
		if st := e.status(); !st.Valid || st.State != string(StateActive) {
			t.Errorf("a conflict changed the license state: %s valid=%v", st.State, st.Valid)
		}
	})
}

// A queued use replayed while another update holds the license row (409)
// stays queued and is sent at the next replay; it is never dropped as a
// refusal.
func TestUseReplayKeepsConflictedUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxUses: intp(5)}})
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		if _, err := e.a.use(t.Context(), 2); err != nil {
			t.Fatalf("offline use: %v", err)
		}
		e.srv.SetFaults(devserver.Faults{})
		unlock := e.srv.LockUses(e.license.ID)
		e.a.replayOutbox(t.Context())
		if got := e.keygenUses(); got != 0 {
			t.Fatalf("Keygen counts %d uses while the row is locked", got)
		}
		if q := e.a.queuedUses(e.license.ID); q.net != 2 {
			t.Fatalf("queued uses after a conflicted replay: %+v, want 2 kept", q)
		}
		unlock()
		e.a.replayOutbox(t.Context())
		if got := e.keygenUses(); got != 2 {
			t.Fatalf("Keygen counts %d uses after the replay, want 2", got)
		}
	})
}
