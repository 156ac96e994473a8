package ipc

import (
	"os"
	"path/filepath"
	"strconv"
)

// maxSocketPath is sizeof(sun_path) on Linux, including the NUL.
const maxSocketPath = 108

// DefaultSocketPath is the machine-wide agent's socket.
func DefaultSocketPath() string { return "/run/keygen-agent/agent.sock" }

// DefaultUserSocketPath is a per-user agent's socket: under
// $XDG_RUNTIME_DIR, else /tmp/keygen-agent-<uid>.
func DefaultUserSocketPath() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "keygen-agent", "agent.sock")
	}
	return filepath.Join(os.TempDir(), "keygen-agent-"+strconv.Itoa(os.Getuid()), "agent.sock")
}
