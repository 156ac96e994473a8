// Package version owns the agent's version: the one string that the
// `version` verb prints, agent.hello reports to apps and the Keygen client
// sends in its User-Agent. Release builds set it in one place:
//
//	go build -ldflags "-X github.com/keygen-agent/keygen-agent/internal/version.Version=1.2.3" ./cmd/keygen-agent
//
// Without it, a binary built with `go install module@version` reports the
// module version from its build information, and any other build "dev".
package version

import (
	"runtime/debug"
	"sync"
)

// Version is set at link time (see the package comment). Read it through
// [Get], which applies the build-information fallback.
var Version = ""

// Get returns the agent's version: [Version] if set, else the main
// module's version from the build information, else "dev".
func Get() string { return get() }

var get = sync.OnceValue(func() string {
	if Version != "" {
		return Version
	}
	return fromBuildInfo(debug.ReadBuildInfo())
})

func fromBuildInfo(bi *debug.BuildInfo, ok bool) string {
	if ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
