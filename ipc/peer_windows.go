package ipc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/windows"

	"github.com/keygen-agent/keygen-agent/internal/procwatch"
)

var procImpersonateNamedPipeClient = windows.NewLazySystemDLL("advapi32.dll").NewProc("ImpersonateNamedPipeClient")

// firstData reads the first bytes the client sends (within idle): a pipe
// server may impersonate its client only after reading from the pipe. The
// bytes are handed back to the frame reader. It also notes when the
// connection was accepted, so a process created later cannot pass for the
// client ([peerCredentials]).
func firstData(nc net.Conn, idle time.Duration) ([]byte, error) {
	accepted.Store(nc, time.Now())
	_ = nc.SetReadDeadline(time.Now().Add(idle))
	buf := make([]byte, 4096)
	n, err := nc.Read(buf)
	if n > 0 {
		return buf[:n], nil
	}
	if err == nil {
		err = errors.New("empty read")
	}
	accepted.Delete(nc)
	return nil, err
}

// accepted holds each connection's accept time until peerCredentials
// reads it; unpins holds the release of its pinned process handle until
// the connection ends (releasePeer).
var accepted, unpins sync.Map

func releasePeer(nc net.Conn) {
	accepted.Delete(nc)
	if f, ok := unpins.LoadAndDelete(nc); ok {
		f.(func())()
	}
}

// peerCredentials identifies the connection itself: the user SID and
// whether it is an elevated Administrator come from the client's token,
// obtained by impersonating the pipe client (the token of the thread that
// opened the pipe, which a PID cannot lie about). The client's PID comes
// from the pipe; its process is opened, checked to have existed when the
// connection was accepted (not a newer process that reused the PID) and
// the handle is pinned in procwatch for the connection's life, so the
// lease exit watch waits on this process and no other. Any failure fails
// the connection closed.
func peerCredentials(nc net.Conn, _ int, _ *slog.Logger) (Peer, error) {
	f, ok := nc.(interface{ Fd() uintptr })
	if !ok {
		return Peer{}, fmt.Errorf("peer credentials: %T is not a named pipe", nc)
	}
	pipe := windows.Handle(f.Fd())
	user, admin, err := connectionIdentity(pipe)
	if err != nil {
		return Peer{}, err
	}
	var pid uint32
	if err := windows.GetNamedPipeClientProcessId(pipe, &pid); err != nil {
		return Peer{}, fmt.Errorf("GetNamedPipeClientProcessId: %w", err)
	}
	h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_QUERY_LIMITED_INFORMATION, false, pid)
	if err != nil {
		return Peer{}, fmt.Errorf("open client process %d: %w", pid, err)
	}
	start, err := procwatch.HandleStartTime(h)
	if err != nil {
		windows.CloseHandle(h)
		return Peer{}, fmt.Errorf("client process %d start time: %w", pid, err)
	}
	if at, ok := accepted.LoadAndDelete(nc); ok {
		if err := checkClientStart(start, at.(time.Time)); err != nil {
			windows.CloseHandle(h)
			return Peer{}, fmt.Errorf("client process %d: %w", pid, err)
		}
	}
	if ev, err := windows.WaitForSingleObject(h, 0); err != nil || ev != uint32(windows.WAIT_TIMEOUT) {
		windows.CloseHandle(h)
		return Peer{}, fmt.Errorf("client process %d has exited", pid)
	}
	p := Peer{PID: int(pid), UID: user, Admin: admin, StartTime: start, Exe: handleExe(h)}
	unpins.Store(nc, procwatch.Pin(int(pid), start, h))
	return p, nil
}

// errClientNewer: the process now holding the client's PID was created
// after the connection was accepted, so it is not the client.
var errClientNewer = errors.New("created after the connection was accepted (its PID was reused)")

// checkClientStart compares a process creation time (a FILETIME as
// procwatch returns it) with the accept time.
func checkClientStart(start uint64, accepted time.Time) error {
	ft := windows.Filetime{LowDateTime: uint32(start), HighDateTime: uint32(start >> 32)}
	if time.Unix(0, ft.Nanoseconds()).After(accepted) {
		return errClientNewer
	}
	return nil
}

// connectionIdentity impersonates the pipe's client on a locked OS thread,
// opens the thread's (impersonation) token and reverts. If RevertToSelf
// fails, the thread still carries the client's identity: the goroutine
// ends without unlocking it, and the runtime discards the thread.
func connectionIdentity(pipe windows.Handle) (user string, admin bool, err error) {
	type result struct {
		tok windows.Token
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if r, _, e := procImpersonateNamedPipeClient.Call(uintptr(pipe)); r == 0 {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("ImpersonateNamedPipeClient: %w", e)}
			return
		}
		var tok windows.Token
		// openAsSelf: the access check uses the service's own identity (an
		// Identification-level token may not open objects).
		terr := windows.OpenThreadToken(windows.CurrentThread(), windows.TOKEN_QUERY, true, &tok)
		if rerr := windows.RevertToSelf(); rerr != nil {
			if terr == nil {
				tok.Close()
			}
			ch <- result{err: fmt.Errorf("RevertToSelf: %w", rerr)}
			return // thread stays locked: discarded with this goroutine
		}
		runtime.UnlockOSThread()
		if terr != nil {
			terr = fmt.Errorf("OpenThreadToken: %w", terr)
		}
		ch <- result{tok: tok, err: terr}
	}()
	r := <-ch
	if r.err != nil {
		return "", false, fmt.Errorf("identify pipe client: %w", r.err)
	}
	defer r.tok.Close()
	u, err := r.tok.GetTokenUser()
	if err != nil {
		return "", false, fmt.Errorf("client token user: %w", err)
	}
	admin, err = tokenIsAdmin(r.tok)
	if err != nil {
		return "", false, err
	}
	return u.User.Sid.String(), admin, nil
}

// tokenIsAdmin reports whether an impersonation token is an elevated
// member of BUILTIN\Administrators (CheckTokenMembership); a filtered
// (non-elevated) admin token has the group as deny-only and correctly
// reports false.
func tokenIsAdmin(tok windows.Token) (bool, error) {
	sid, err := windows.CreateWellKnownSid(windows.WinBuiltinAdministratorsSid)
	if err != nil {
		return false, fmt.Errorf("administrators SID: %w", err)
	}
	ok, err := tok.IsMember(sid)
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
