package agent

import (
	"encoding/json"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

func TestLicenseChangedIsPushed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{cfg: Config{RevalidateInterval: Duration(5 * time.Minute)}})
		c := e.dial(agenttest.PeerFor(5))
		defer c.Close()
		var hello ipc.HelloResult
		if _, err := c.Call(ipc.MethodHello, ipc.HelloParams{Protocol: ipc.ProtocolVersion}, &hello); err != nil {
			t.Fatal(err)
		}
		e.srv.UpdateLicense(e.license.ID, func(l *devserver.License) { l.Suspended = true })
		n, ok := c.NextNote(ipc.NotifyLicenseChanged, 10*time.Minute)
		if !ok {
			t.Fatal("no license.changed")
		}
		var st ipc.Status
		if err := json.Unmarshal(n.Params, &st); err != nil || st.State != string(StateSuspended) || st.Valid {
			t.Fatalf("license.changed = %s (%v)", n.Params, err)
		}
	})
}

// A policy that requires machine heartbeats: the agent keeps the machine
// alive over many windows.
func TestMachineHeartbeatKeptAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hb := 120
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{RequireHeartbeat: true, HeartbeatDuration: &hb}})
		for range 10 {
			time.Sleep(time.Duration(hb) * time.Second)
			ms := e.srv.Machines()
			if len(ms) != 1 || ms[0].HeartbeatStatus != "ALIVE" {
				t.Fatalf("machine = %+v", ms)
			}
		}
		if st := e.status(); st.State != string(StateActive) {
			t.Fatalf("status = %+v", st)
		}
	})
}

// A stale Keygen process with the same pid attribute (left by a crash
// whose cache was lost) is killed and the spawn retried.
func TestPIDTakenResolved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		mid := e.a.machineID()
		kc := otherClient(t, e)
		p := agenttest.PeerFor(77)
		if _, err := kc.SpawnProcess(t.Context(), mid, keygenPID(p.PID, p.StartTime), nil); err != nil {
			t.Fatal(err)
		}
		e.procs.Spawn(77)
		c := e.dial(p)
		defer c.Close()
		r, _, err := c.Acquire(acquireParams())
		if err != nil {
			t.Fatal(err)
		}
		ps := e.srv.Processes()
		if len(ps) != 1 || ps[0].ID != r.ProcessID {
			t.Fatalf("processes = %+v, lease process %s", ps, r.ProcessID)
		}
	})
}

func TestShutdownKillsAllProcesses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(5)}})
		e.start()
		e.waitFor("active", func() bool { return e.status().State == string(StateActive) })
		for pid := 80; pid < 84; pid++ {
			e.procs.Spawn(pid)
			c := e.dial(agenttest.PeerFor(pid))
			defer c.Close()
			if _, _, err := c.Acquire(acquireParams()); err != nil {
				t.Fatal(err)
			}
		}
		e.stop()
		if n := len(e.srv.Processes()); n != 0 {
			t.Fatalf("processes after shutdown = %d", n)
		}
	})
}

func TestStrictOfflineDeniesNewLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{cfg: Config{StrictOffline: true}})
		e.srv.SetFaults(devserver.Faults{Refuse: true})
		_ = e.a.requestSync(t.Context())
		e.procs.Spawn(90)
		c := e.dial(agenttest.PeerFor(90))
		defer c.Close()
		if _, code, err := c.Acquire(acquireParams()); code != ipc.CodeOfflineExpired {
			t.Fatalf("code %q err %v", code, err)
		}
	})
}
