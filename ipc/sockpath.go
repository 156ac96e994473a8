package ipc

import "github.com/keygen-agent/keygen-agent/internal/paths"

// DefaultSocketPath is the machine-wide agent's socket: /run/keygen-agent/agent.sock
// on Linux, /var/run/keygen-agent/agent.sock on macOS and the BSDs, the
// named pipe \\.\pipe\keygen-agent on Windows.
func DefaultSocketPath() string { return paths.System().Socket }

// DefaultUserSocketPath is a per-user agent's socket: under
// $XDG_RUNTIME_DIR (Linux, BSDs) or ~/Library/Application Support
// (macOS), else /tmp/keygen-agent-<uid>; on Windows a named pipe suffixed
// with the user's SID.
func DefaultUserSocketPath() string { return paths.User().Socket }
