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
