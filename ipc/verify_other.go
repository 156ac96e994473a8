//go:build unix && !linux && !darwin

package ipc

import (
	"fmt"
	"net"
	"os"
	"strconv"
)

// verifyServer checks the uid the kernel recorded for the server end of a
// connected socket. On FreeBSD LOCAL_PEERCRED names the process that called
// listen when read on the client end; on the other unixes peer credentials
// are unsupported and the check fails closed.
func verifyServer(nc net.Conn, t serverTrust) error {
	p, err := peerCredentials(nc, -1)
	if err != nil {
		return fmt.Errorf("verify server: %w", err)
	}
	if !t.allows(p.UID) {
		return untrusted(p.PID, "uid "+p.UID, t)
	}
	return nil
}

func defaultTrust(extra []string) serverTrust {
	return trustFor(strconv.Itoa(os.Getuid()), "0", extra)
}
