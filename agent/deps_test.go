package agent

import (
	"os/exec"
	"strings"
	"testing"
)

// agent/ must never import the dev server (DESIGN.md).
func TestAgentDoesNotImportDevserver(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skip("go list unavailable:", err)
	}
	if strings.Contains(string(out), "keygen/devserver") {
		t.Fatal("agent imports keygen/devserver")
	}
}
