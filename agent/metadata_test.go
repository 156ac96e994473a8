package agent

import (
	"strings"
	"testing"
	"testing/synctest"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
)

func TestLeaseMetadataLimits(t *testing.T) {
	ok := []map[string]any{
		nil,
		{"a": 1},
		{"a": map[string]any{"b": 1}}, // objects in the top-level object fit under appMetadata
		{"list": []any{1, 2, 3}},
	}
	for _, md := range ok {
		if err := checkLeaseMetadata(md); err != nil {
			t.Errorf("%v refused: %v", md, err)
		}
	}
	many := map[string]any{}
	for i := range 60 {
		many[strings.Repeat("k", i+1)] = i
	}
	bad := map[string]map[string]any{
		"nested":   {"a": map[string]any{"b": map[string]any{"c": 1}}},
		"in array": {"a": []any{map[string]any{"b": []any{1}}}},
		"keys":     many,
		"bytes":    {"blob": strings.Repeat("x", 16<<10)},
	}
	for name, md := range bad {
		err := checkLeaseMetadata(md)
		var ierr *ipc.Error
		if err == nil || !asIPC(err, &ierr) || ierr.Code != ipc.CodeInvalidRequest {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func asIPC(err error, target **ipc.Error) bool {
	e, ok := err.(*ipc.Error)
	if ok {
		*target = e
	}
	return ok
}

// Deep metadata is refused at lease.acquire, before any Keygen process is
// spawned (Keygen would reject the spawn).
func TestAcquireRefusesDeepMetadata(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{})
		c := e.dial(agenttest.PeerFor(400))
		defer c.Close()
		e.procs.Spawn(400)
		p := acquireParams()
		p.Metadata = map[string]any{"a": map[string]any{"b": map[string]any{"c": 1}}}
		_, code, err := c.Acquire(p)
		if err == nil || code != ipc.CodeInvalidRequest || !strings.Contains(err.Error(), "flatten") {
			t.Fatalf("acquire = %q, %v", code, err)
		}
		if n := len(e.srv.Processes()); n != 0 {
			t.Errorf("%d processes spawned", n)
		}
	})
}
