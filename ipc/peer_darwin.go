package ipc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os/user"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/keygen-agent/keygen-agent/internal/procwatch"
)

// peerCredentials reads LOCAL_PEERTOKEN, the client's audit token as the
// kernel recorded it at connect: effective uid, PID and PID version
// together. LOCAL_PEERPID is not used: it names the last process to use the
// peer socket (which may have been passed on) and fails with ENOTCONN once
// the peer closed. Groups for admin_group come from LOCAL_PEERCRED (cached
// at connect too), which carries at most 16 groups; when those do not hold
// admin_group, the user's full membership is asked of the directory
// service (see darwinGroups).
func peerCredentials(nc net.Conn, adminGID int, log *slog.Logger) (Peer, error) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return Peer{}, fmt.Errorf("peer credentials: %T is not a unix socket", nc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var xu *unix.Xucred
	var tok auditToken
	var xerr, terr error
	if err := rc.Control(func(fd uintptr) {
		xu, xerr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		tok, terr = getsockoptAuditToken(int(fd))
	}); err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	if xerr != nil {
		return Peer{}, fmt.Errorf("LOCAL_PEERCRED: %w", xerr)
	}
	if terr != nil {
		return Peer{}, fmt.Errorf("LOCAL_PEERTOKEN: %w", terr)
	}
	p := Peer{PID: tok.PID, UID: strconv.FormatUint(uint64(tok.EUID), 10)}
	n := min(int(xu.Ngroups), len(xu.Groups))
	if n > 0 {
		p.GID = strconv.FormatUint(uint64(xu.Groups[0]), 10)
	}
	p.Admin = tok.EUID == 0
	if !p.Admin && adminGID >= 0 {
		admin, err := inAdminGroup(adminGID, xu.Groups[:n], p.UID, darwinGroups.groups)
		if err != nil {
			if k, ok := groupWarnings.allow(time.Now()); ok {
				log.Warn("admin_group membership unknown; the caller is not admin", "uid", p.UID, "pid", p.PID, "err", err, "suppressed", k)
			}
		}
		p.Admin = admin
	}
	p.StartTime, _ = procwatch.StartTime(p.PID)
	p.Exe = processExe(p.PID)
	return p, nil
}

// darwinGroups lists a user's groups through os/user, which on darwin
// (also without cgo) calls libc's getgrouplist: Open Directory's answer,
// with local, directory and nested groups, and no 16-group limit (os/user
// grows its buffer). Answers are kept for a short while: a client opening
// connections in a loop must not load opendirectoryd.
var darwinGroups = newGroupCache(30*time.Second, 1024, time.Now, func(uid string) ([]string, error) {
	u, err := user.LookupId(uid)
	if err != nil {
		return nil, err
	}
	return u.GroupIds()
})

// groupWarnings rate-limits the WARN about a failed group lookup: the
// failure is cached, but a client may connect in a loop.
var groupWarnings = logLimiter{every: 10 * time.Second}

// getsockoptAuditToken reads LOCAL_PEERTOKEN (an audit_token_t, 32 bytes).
// x/sys has no raw getsockopt for darwin; GetsockoptXucred passes a
// 76-byte buffer, into which the kernel (sooptcopyout) copies the 32-byte
// token, read back here as eight words.
func getsockoptAuditToken(fd int) (auditToken, error) {
	x, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERTOKEN)
	if err != nil {
		return auditToken{}, err
	}
	words := (*[8]uint32)(unsafe.Pointer(x))
	return parseAuditToken(*words), nil
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
