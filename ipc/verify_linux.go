package ipc

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// serverCred reads SO_PEERCRED on the client end of a connected socket: it
// names the process that called listen.
func serverCred(fd int) (uid uint32, pid int, err error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, 0, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	return cred.Uid, int(cred.Pid), nil
}
