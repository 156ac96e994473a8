package ipc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/Microsoft/go-winio"
	"golang.org/x/sys/windows"
)

// Listen creates the named pipe path ("" = [DefaultSocketPath]) with
// [pipeSDDL] for the agent's own account (or o.SDDL). go-winio creates the first instance with
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
		owner := ""
		if u, err := windows.GetCurrentProcessToken().GetTokenUser(); err == nil {
			owner = u.User.Sid.String()
		}
		sddl = pipeSDDL(owner)
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

// dialTransport opens the pipe at Identification level and sends a blank
// line (which the server skips): the server identifies a connection by
// impersonating it, which it may do only once it has read from the pipe,
// so this lets it admit the connection before the first request.
func dialTransport(ctx context.Context, path string) (net.Conn, error) {
	nc, err := winio.DialPipeAccessImpLevel(ctx, path, windows.GENERIC_READ|windows.GENERIC_WRITE, winio.PipeImpLevelIdentification)
	if err != nil {
		return nil, err
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	_ = nc.SetWriteDeadline(dl)
	_, err = nc.Write([]byte("\n"))
	_ = nc.SetWriteDeadline(time.Time{})
	// A server that refused the connection (BUSY) has written its answer
	// and closed: the write fails with a broken pipe and the caller reads
	// the refusal. Only a server that never reads is an error here.
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		nc.Close()
		return nil, fmt.Errorf("write to %s: %w", path, err)
	}
	return nc, nil
}

// lookupGroupID: Windows admins are decided from the token, not a group.
func lookupGroupID(name string) (int, error) {
	return -1, errors.New("an admin group is not used on Windows: elevated Administrators are admins")
}
