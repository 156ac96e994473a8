package agent

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

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
