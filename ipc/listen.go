package ipc

import (
	"errors"
	"os"
)

// ListenOptions configures [Listen].
type ListenOptions struct {
	// Group owns the socket (name or gid) so its members may connect
	// (unix). Empty keeps the agent's group.
	Group string
	// Mode is the socket's permission bits (unix), default 0660.
	Mode os.FileMode
	// SDDL replaces the named pipe's security descriptor (Windows).
	SDDL string
}

// ErrAlreadyListening is returned by [Listen] when another process is
// serving on the path.
var ErrAlreadyListening = errors.New("another keygen-agent is already listening")
