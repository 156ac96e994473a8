package ipc

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/keygen-agent/keygen-agent/internal/procwatch"
)

// peerCredentials reads SO_PEERCRED (the process that called connect) and
// pins it with its start time from /proc.
func peerCredentials(nc net.Conn, adminGID int, _ *slog.Logger) (Peer, error) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return Peer{}, fmt.Errorf("peer credentials: %T is not a unix socket", nc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return Peer{}, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	p := Peer{PID: int(cred.Pid), UID: strconv.FormatUint(uint64(cred.Uid), 10), GID: strconv.FormatUint(uint64(cred.Gid), 10)}
	p.Admin = cred.Uid == 0 || (adminGID >= 0 && int(cred.Gid) == adminGID)
	if p.PID > 0 {
		p.StartTime, _ = procwatch.StartTime(p.PID)
		p.Exe, _ = os.Readlink("/proc/" + strconv.Itoa(p.PID) + "/exe")
		if !p.Admin && adminGID >= 0 && p.StartTime != 0 {
			groups, err := procGroups(p.PID)
			// Re-check the start time so a recycled PID cannot lend its groups.
			if st, _ := procwatch.StartTime(p.PID); err == nil && st == p.StartTime {
				for _, g := range groups {
					if g == adminGID {
						p.Admin = true
					}
				}
			}
		}
	}
	return p, nil
}

// procGroups reads the supplementary groups from /proc/<pid>/status.
func procGroups(pid int) ([]int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var out []int
		for _, s := range strings.Fields(rest) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
		return out, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("no Groups line in /proc/%d/status", pid)
}
