package ipc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/keygen-agent/keygen-agent/internal/procwatch"
)

// peerCredentials reads LOCAL_PEERCRED (uid, groups) and LOCAL_PEERPID.
func peerCredentials(nc net.Conn, adminGID int) (Peer, error) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return Peer{}, fmt.Errorf("peer credentials: %T is not a unix socket", nc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var xu *unix.Xucred
	var pid int
	var xerr, perr error
	if err := rc.Control(func(fd uintptr) {
		xu, xerr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		pid, perr = unix.GetsockoptInt(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	}); err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	if xerr != nil {
		return Peer{}, fmt.Errorf("LOCAL_PEERCRED: %w", xerr)
	}
	if perr != nil {
		return Peer{}, fmt.Errorf("LOCAL_PEERPID: %w", perr)
	}
	p := Peer{PID: pid, UID: strconv.FormatUint(uint64(xu.Uid), 10)}
	n := min(int(xu.Ngroups), len(xu.Groups))
	if n > 0 {
		p.GID = strconv.FormatUint(uint64(xu.Groups[0]), 10)
	}
	p.Admin = xu.Uid == 0
	for _, g := range xu.Groups[:n] {
		if adminGID >= 0 && int(g) == adminGID {
			p.Admin = true
		}
	}
	p.StartTime, _ = procwatch.StartTime(pid)
	p.Exe = processExe(pid)
	return p, nil
}

// processExe reads the executable path from kern.procargs2 (best effort).
func processExe(pid int) string {
	b, err := unix.SysctlRaw("kern.procargs2", pid)
	if err != nil || len(b) < 5 {
		return ""
	}
	_ = binary.LittleEndian.Uint32(b) // argc
	b = b[4:]
	if i := bytes.IndexByte(b, 0); i > 0 {
		return string(b[:i])
	}
	return ""
}
