//go:build unix

package ipc

import (
	"fmt"
	"net"
	"os"
	"strconv"
)

// verifyServer checks the credentials the kernel recorded for the server
// end of a connected socket (serverCred, per OS): its uid must be trusted.
func verifyServer(nc net.Conn, t serverTrust) error {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("verify server: %T is not a unix socket", nc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("verify server: %w", err)
	}
	var uid uint32
	var pid int
	var cerr error
	if err := rc.Control(func(fd uintptr) { uid, pid, cerr = serverCred(int(fd)) }); err != nil {
		return fmt.Errorf("verify server: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("verify server: %w", cerr)
	}
	u := strconv.FormatUint(uint64(uid), 10)
	if !t.allows(u) {
		return untrusted(pid, "uid "+u, t)
	}
	return nil
}

func defaultTrust(extra []string) serverTrust {
	return trustFor(strconv.Itoa(os.Getuid()), "0", extra)
}
