package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{nil, false, "dev"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "dev"},
		{&debug.BuildInfo{Main: debug.Module{Version: ""}}, true, "dev"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, true, "v1.4.0"},
	} {
		if got := fromBuildInfo(tc.bi, tc.ok); got != tc.want {
			t.Errorf("fromBuildInfo(%+v, %v) = %q, want %q", tc.bi, tc.ok, got, tc.want)
		}
	}
}

// TestGetIsStable: every caller sees the same string.
func TestGetIsStable(t *testing.T) {
	if a, b := Get(), Get(); a == "" || a != b {
		t.Fatalf("Get() = %q then %q", a, b)
	}
}
