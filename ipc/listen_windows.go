package ipc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/Microsoft/go-winio"
	"golang.org/x/sys/windows"
)

// pipeSDDL is the named pipe's security descriptor:
//
//	D:P              a protected DACL (no inherited entries)
//	(D;;GA;;;NU)     deny everything to NETWORK logons (belt and braces:
//	                 go-winio also sets PIPE_REJECT_REMOTE_CLIENTS)
//	(A;;GA;;;SY)     allow full control to LocalSystem (the service)
//	(A;;GA;;;BA)     allow full control to BUILTIN\Administrators
//	(A;;GRGW;;;AU)   allow read and write to Authenticated Users (apps);
//	                 admin methods are still decided from the caller's token
const pipeSDDL = "D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;AU)"

// Listen creates the named pipe path ("" = [DefaultSocketPath]) with
// [pipeSDDL] (or o.SDDL). go-winio creates the first instance with
// FILE_CREATE, so a second agent on the same name fails, and rejects
// remote clients.
func Listen(path string, o ListenOptions) (net.Listener, error) {
	if path == "" {
		path = DefaultSocketPath()
	}
	if !strings.HasPrefix(strings.ToLower(path), `\\.\pipe\`) {
		return nil, fmt.Errorf(`pipe path %q must start with \\.\pipe\`, path)
	}
	sddl := o.SDDL
	if sddl == "" {
		sddl = pipeSDDL
	}
	ln, err := winio.ListenPipe(path, &winio.PipeConfig{SecurityDescriptor: sddl})
	if err != nil {
		if errors.Is(err, windows.ERROR_ACCESS_DENIED) || errors.Is(err, windows.ERROR_PIPE_BUSY) {
			return nil, fmt.Errorf("%w on %s: %w", ErrAlreadyListening, path, err)
		}
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, nil
}

func dialTransport(ctx context.Context, path string) (net.Conn, error) {
	return winio.DialPipeAccessImpLevel(ctx, path, windows.GENERIC_READ|windows.GENERIC_WRITE, winio.PipeImpLevelIdentification)
}

// lookupGroupID: Windows admins are decided from the token, not a group.
func lookupGroupID(name string) (int, error) {
	return -1, errors.New("an admin group is not used on Windows: elevated Administrators are admins")
}
