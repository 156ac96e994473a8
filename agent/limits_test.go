package agent

import (
	"strings"
	"testing"

	"github.com/keygen-agent/keygen-agent/ipc"
)

func TestAcquireParamLimits(t *testing.T) {
	big := map[string]any{"blob": strings.Repeat("x", MaxMetadataBytes)}
	for _, tc := range []struct {
		name string
		p    ipc.AcquireParams
		ok   bool
	}{
		{"plain", ipc.AcquireParams{App: "cad", Metadata: map[string]any{"seat": "a"}}, true},
		{"metadata over 4 KiB", ipc.AcquireParams{Metadata: big}, false},
		{"long app", ipc.AcquireParams{App: strings.Repeat("a", MaxAppField+1)}, false},
		{"long app_version", ipc.AcquireParams{AppVersion: strings.Repeat("1", MaxAppField+1)}, false},
		{"negative wait", ipc.AcquireParams{WaitMS: -1}, false},
	} {
		err := checkAcquireParams(&tc.p)
		if tc.ok != (err == nil) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
		if err != nil && !ipc.IsCode(err, ipc.CodeInvalidRequest) {
			t.Errorf("%s: %v, want INVALID_REQUEST", tc.name, err)
		}
	}
	p := ipc.AcquireParams{WaitMS: 24 * 3600 * 1000}
	if err := checkAcquireParams(&p); err != nil || p.WaitMS != MaxWaitMS {
		t.Fatalf("a day's wait_ms: %v, wait %d; want it cut to %d", err, p.WaitMS, MaxWaitMS)
	}
}
