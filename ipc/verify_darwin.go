package ipc

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// verifyServer checks the credentials the kernel cached for the server end
// of a connected socket (LOCAL_PEERCRED on the client side: the listener's
// credentials): its uid must be trusted.
func verifyServer(nc net.Conn, t serverTrust) error {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("verify server: %T is not a unix socket", nc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("verify server: %w", err)
	}
	var xu *unix.Xucred
	var xerr error
	if err := rc.Control(func(fd uintptr) {
		xu, xerr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil {
		return fmt.Errorf("verify server: %w", err)
	}
	if xerr != nil {
		return fmt.Errorf("verify server: LOCAL_PEERCRED: %w", xerr)
	}
	uid := strconv.FormatUint(uint64(xu.Uid), 10)
	if !t.allows(uid) {
		return untrusted(0, "uid "+uid, t)
	}
	return nil
}

func defaultTrust(extra []string) serverTrust {
	return trustFor(strconv.Itoa(os.Getuid()), "0", extra)
}
