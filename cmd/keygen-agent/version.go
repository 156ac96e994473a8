package main

import (
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/keygen-agent/keygen-agent/internal/version"
)

func init() {
	register(verb{name: "version", summary: "print the agent's version", run: runVersion})
}

// runVersion prints version.Get, the one version the agent reports
// everywhere (set at link time in internal/version).
func runVersion(e *env) int {
	fs := newFlagSet(e, "version", "", "Print the agent's version, Go version and platform.", "")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	info := map[string]string{"version": version.Get(), "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
	if *asJSON {
		_ = json.NewEncoder(e.stdout).Encode(info)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "keygen-agent %s (%s, %s)\n", info["version"], info["go"], info["platform"])
	return exitOK
}
