package main

import (
	"strings"
	"testing"

	"github.com/keygen-agent/keygen-agent/agent"
)

// `run --help` lists every configuration field of the agent's table, with
// its environment variable.
func TestRunHelpListsEveryField(t *testing.T) {
	_, out, errs := runCLI("run", "--help")
	help := out + errs
	for _, f := range agent.ConfigFields() {
		if !strings.Contains(help, f.Key) || (f.Env != "" && !strings.Contains(help, f.Env)) {
			t.Errorf("run --help lacks %s (%s)", f.Key, f.Env)
		}
	}
}
