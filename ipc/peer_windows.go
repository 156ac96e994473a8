package ipc

import (
	"fmt"
	"net"

	"golang.org/x/sys/windows"

	"github.com/keygen-agent/keygen-agent/internal/procwatch"
)

// peerCredentials asks the pipe for the client's process ID, then opens the
// process to read its start time, user SID and whether its token is an
// elevated Administrator. Any failure fails the connection closed.
func peerCredentials(nc net.Conn, _ int) (Peer, error) {
	f, ok := nc.(interface{ Fd() uintptr })
	if !ok {
		return Peer{}, fmt.Errorf("peer credentials: %T is not a named pipe", nc)
	}
	var pid uint32
	if err := windows.GetNamedPipeClientProcessId(windows.Handle(f.Fd()), &pid); err != nil {
		return Peer{}, fmt.Errorf("GetNamedPipeClientProcessId: %w", err)
	}
	p := Peer{PID: int(pid)}
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, pid)
	if err != nil {
		return Peer{}, fmt.Errorf("open client process %d: %w", pid, err)
	}
	defer windows.CloseHandle(h)
	p.StartTime, _ = procwatch.StartTime(int(pid)) // the open handle h keeps pid from being reused
	p.Exe = handleExe(h)
	var tok windows.Token
	if err := windows.OpenProcessToken(h, windows.TOKEN_QUERY|windows.TOKEN_DUPLICATE, &tok); err != nil {
		return Peer{}, fmt.Errorf("open client token: %w", err)
	}
	defer tok.Close()
	u, err := tok.GetTokenUser()
	if err != nil {
		return Peer{}, fmt.Errorf("client token user: %w", err)
	}
	p.UID = u.User.Sid.String()
	p.Admin, err = tokenIsAdmin(tok)
	if err != nil {
		return Peer{}, err
	}
	return p, nil
}

// tokenIsAdmin reports whether a primary token is an elevated member of
// BUILTIN\Administrators. CheckTokenMembership needs an impersonation
// token, hence the duplicate; a filtered (non-elevated) admin token has
// the group as deny-only and correctly reports false.
func tokenIsAdmin(tok windows.Token) (bool, error) {
	var dup windows.Token
	if err := windows.DuplicateTokenEx(tok, windows.TOKEN_QUERY, nil, windows.SecurityIdentification, windows.TokenImpersonation, &dup); err != nil {
		return false, fmt.Errorf("duplicate client token: %w", err)
	}
	defer dup.Close()
	sid, err := windows.CreateWellKnownSid(windows.WinBuiltinAdministratorsSid)
	if err != nil {
		return false, fmt.Errorf("administrators SID: %w", err)
	}
	ok, err := dup.IsMember(sid)
	if err != nil {
		return false, fmt.Errorf("check administrators membership: %w", err)
	}
	return ok, nil
}

func handleExe(h windows.Handle) string {
	buf := make([]uint16, windows.MAX_LONG_PATH)
	n := uint32(len(buf))
	if err := windows.QueryFullProcessImageName(h, 0, &buf[0], &n); err != nil {
		return ""
	}
	return windows.UTF16ToString(buf[:n])
}
