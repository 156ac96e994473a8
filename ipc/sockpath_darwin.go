package ipc

import (
	"os"
	"path/filepath"
	"strconv"
)

// maxSocketPath is sizeof(sun_path) on macOS, including the NUL.
const maxSocketPath = 104

// DefaultSocketPath is the machine-wide agent's socket.
func DefaultSocketPath() string { return "/var/run/keygen-agent/agent.sock" }

// DefaultUserSocketPath is a per-user agent's socket, under
// ~/Library/Application Support (short enough for the 104-byte limit),
// else /tmp/keygen-agent-<uid>.
func DefaultUserSocketPath() string {
	if h, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(h, "Library", "Application Support", "keygen-agent", "agent.sock")
		if len(p) < maxSocketPath {
			return p
		}
	}
	return filepath.Join("/tmp", "keygen-agent-"+strconv.Itoa(os.Getuid()), "agent.sock")
}
