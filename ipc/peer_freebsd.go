package ipc

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// peerCredentials reads LOCAL_PEERCRED (uid and groups of the process that
// called connect). FreeBSD's xucred as golang.org/x/sys exposes it has no
// PID, so the peer's PID, start time and executable stay unknown (0, "").
func peerCredentials(nc net.Conn, adminGID int, _ *slog.Logger) (Peer, error) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return Peer{}, fmt.Errorf("peer credentials: %T is not a unix socket", nc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var xu *unix.Xucred
	var xerr error
	if err := rc.Control(func(fd uintptr) {
		xu, xerr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	if xerr != nil {
		return Peer{}, fmt.Errorf("LOCAL_PEERCRED: %w", xerr)
	}
	p := Peer{UID: strconv.FormatUint(uint64(xu.Uid), 10)}
	n := min(int(xu.Ngroups), len(xu.Groups))
	if n > 0 {
		p.GID = strconv.FormatUint(uint64(xu.Groups[0]), 10)
	}
	p.Admin = xu.Uid == 0
	for _, g := range xu.Groups[:max(n, 0)] {
		if adminGID >= 0 && int(g) == adminGID {
			p.Admin = true
		}
	}
	return p, nil
}
