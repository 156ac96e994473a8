package ipc

import "golang.org/x/sys/windows"

// DefaultSocketPath is the machine-wide agent's named pipe.
func DefaultSocketPath() string { return `\\.\pipe\keygen-agent` }

// DefaultUserSocketPath is a per-user agent's named pipe, suffixed with the
// user's SID.
func DefaultUserSocketPath() string {
	if u, err := windows.GetCurrentProcessToken().GetTokenUser(); err == nil {
		return `\\.\pipe\keygen-agent-` + u.User.Sid.String()
	}
	return `\\.\pipe\keygen-agent-user`
}
