package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the agent's version, set at build time with
// -ldflags "-X main.Version=1.2.3".
var Version = "dev"

func init() {
	register(verb{name: "version", summary: "print the agent's version", run: runVersion})
}

func runVersion(e *env) int {
	fs := newFlagSet(e, "version", "", "Print the agent's version, Go version and platform.", "")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	info := map[string]string{"version": Version, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && Version == "dev" {
		info["module"] = bi.Main.Version
	}
	if *asJSON {
		_ = json.NewEncoder(e.stdout).Encode(info)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "keygen-agent %s (%s, %s)\n", info["version"], info["go"], info["platform"])
	return exitOK
}
