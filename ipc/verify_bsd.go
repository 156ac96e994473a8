//go:build darwin || freebsd

package ipc

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// serverCred reads LOCAL_PEERCRED on the client end of a connected socket:
// the credentials the kernel cached for the listener (no PID).
func serverCred(fd int) (uid uint32, pid int, err error) {
	xu, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return 0, 0, fmt.Errorf("LOCAL_PEERCRED: %w", err)
	}
	return xu.Uid, 0, nil
}
