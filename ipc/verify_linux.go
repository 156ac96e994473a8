package ipc

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// verifyServer checks the credentials the kernel recorded for the server
// end of a connected socket (SO_PEERCRED on the client side names the
// process that called listen): its uid must be trusted.
func verifyServer(nc net.Conn, t serverTrust) error {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("verify server: %T is not a unix socket", nc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("verify server: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("verify server: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("verify server: SO_PEERCRED: %w", cerr)
	}
	uid := strconv.FormatUint(uint64(cred.Uid), 10)
	if !t.allows(uid) {
		return untrusted(int(cred.Pid), "uid "+uid, t)
	}
	return nil
}

func defaultTrust(extra []string) serverTrust {
	return trustFor(strconv.Itoa(os.Getuid()), "0", extra)
}
