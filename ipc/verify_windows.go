package ipc

import (
	"errors"
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/windows"
)

// sidLocalSystem is NT AUTHORITY\SYSTEM, the service's account.
const sidLocalSystem = "S-1-5-18"

// serviceName is the Windows service whose process is trusted as the
// server even when its token cannot be read (see verifyServer).
const serviceName = "keygen-agent"

// verifyServer asks the pipe for the server's process ID
// (GetNamedPipeServerProcessId) and accepts it if its token's user is
// trusted. A standard user cannot open the token of a LocalSystem process
// (the token's DACL admits SYSTEM and Administrators only), so when the
// token is out of reach the server is accepted only if it is the process
// the service control manager runs as the keygen-agent service
// (QueryServiceStatusEx, which Authenticated Users may query).
func verifyServer(nc net.Conn, t serverTrust) error {
	f, ok := nc.(interface{ Fd() uintptr })
	if !ok {
		return fmt.Errorf("verify server: %T is not a named pipe", nc)
	}
	var pid uint32
	if err := windows.GetNamedPipeServerProcessId(windows.Handle(f.Fd()), &pid); err != nil {
		return fmt.Errorf("verify server: GetNamedPipeServerProcessId: %w", err)
	}
	user, err := processUser(pid)
	if err == nil {
		if !t.allows(user) {
			return untrusted(int(pid), user, t)
		}
		return nil
	}
	if !errors.Is(err, windows.ERROR_ACCESS_DENIED) {
		return fmt.Errorf("verify server process %d: %w", pid, err)
	}
	spid, serr := servicePID(serviceName)
	if serr == nil && spid == pid && spid != 0 {
		return nil
	}
	return untrusted(int(pid), "an account whose token is not readable, and is not the "+serviceName+" service", t)
}

// processUser returns the SID string of the user a process runs as.
func processUser(pid uint32) (string, error) {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, pid)
	if err != nil {
		return "", err
	}
	defer windows.CloseHandle(h)
	var tok windows.Token
	if err := windows.OpenProcessToken(h, windows.TOKEN_QUERY, &tok); err != nil {
		return "", err
	}
	defer tok.Close()
	u, err := tok.GetTokenUser()
	if err != nil {
		return "", err
	}
	return u.User.Sid.String(), nil
}

// servicePID returns the process ID of a running service (0 if stopped).
func servicePID(name string) (uint32, error) {
	m, err := windows.OpenSCManager(nil, nil, windows.SC_MANAGER_CONNECT)
	if err != nil {
		return 0, err
	}
	defer windows.CloseServiceHandle(m)
	n, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return 0, err
	}
	s, err := windows.OpenService(m, n, windows.SERVICE_QUERY_STATUS)
	if err != nil {
		return 0, err
	}
	defer windows.CloseServiceHandle(s)
	var st windows.SERVICE_STATUS_PROCESS
	var need uint32
	if err := windows.QueryServiceStatusEx(s, windows.SC_STATUS_PROCESS_INFO, (*byte)(unsafe.Pointer(&st)), uint32(unsafe.Sizeof(st)), &need); err != nil {
		return 0, err
	}
	return st.ProcessId, nil
}

func defaultTrust(extra []string) serverTrust {
	self := ""
	if u, err := windows.GetCurrentProcessToken().GetTokenUser(); err == nil {
		self = u.User.Sid.String()
	}
	return trustFor(self, sidLocalSystem, extra)
}
