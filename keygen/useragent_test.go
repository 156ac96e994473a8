package keygen

import (
	"runtime"
	"strings"
	"testing"

	"github.com/keygen-agent/keygen-agent/internal/version"
)

// TestUserAgentShape: the agent's product token carries the agent's
// version (internal/version by default) and a vendor prefix only goes
// before it.
func TestUserAgentShape(t *testing.T) {
	tail := " go/" + strings.TrimPrefix(runtime.Version(), "go") + " " + runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct{ prefix, ver, want string }{
		{"", "", "keygen-agent/" + version.Get() + tail},
		{"", "1.2.3", "keygen-agent/1.2.3" + tail},
		{" acme-cad/4.2 ", "1.2.3", "acme-cad/4.2 keygen-agent/1.2.3" + tail},
	} {
		if got := userAgent(tc.prefix, tc.ver); got != tc.want {
			t.Errorf("userAgent(%q, %q) = %q, want %q", tc.prefix, tc.ver, got, tc.want)
		}
	}
}
