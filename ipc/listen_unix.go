//go:build unix

package ipc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// maxSocketPath is sizeof(sun_path), including the NUL: 108 on Linux, 104
// on macOS and the BSDs.
const maxSocketPath = len(syscall.RawSockaddrUnix{}.Path)

// Listen listens on a Unix domain socket at path ("" = [DefaultSocketPath]).
// The parent directory is created with mode 0750 if missing; with o.Group
// it gets that group too, also when it already exists (see
// prepareSocketDir). The socket gets mode 0660 (o.Mode) and group o.Group. An
// existing socket file is replaced only if a dial proves nobody listens on
// it: a second agent fails with a clear error instead of stealing it.
func Listen(path string, o ListenOptions) (net.Listener, error) {
	if path == "" {
		path = DefaultSocketPath()
	}
	if len(path) >= maxSocketPath {
		return nil, fmt.Errorf("socket path %q is %d bytes; this OS allows at most %d: choose a shorter path", path, len(path), maxSocketPath-1)
	}
	mode := o.Mode
	if mode == 0 {
		mode = 0o660
	}
	gid := -1
	if o.Group != "" {
		g, err := lookupGroupID(o.Group)
		if err != nil {
			return nil, fmt.Errorf("socket group %q: %w", o.Group, err)
		}
		gid = g
	}
	if err := prepareSocketDir(path, gid); err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("chown socket: %w", err)
		}
	}
	return ln, nil
}

// prepareSocketDir creates the socket's directory (0750) if missing and,
// when gid >= 0, makes it reachable by that group: a directory that is the
// socket's own (Listen created it, or it holds nothing but the socket and
// is not a shared sticky or world-writable one, as when the daemon, systemd
// or launchd made it root:root) gets the group and mode 0750, whoever
// created it. Any other directory is left alone, but if the group could not
// traverse it Listen fails instead of serving a socket its members cannot
// reach.
func prepareSocketDir(path string, gid int) error {
	dir := filepath.Dir(path)
	created := false
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create socket directory: %w", err)
		}
		if err := os.Chmod(dir, 0o750); err != nil {
			return fmt.Errorf("chmod socket directory: %w", err)
		}
		created = true
	}
	if gid < 0 {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	if created || ownSocketDir(dir, filepath.Base(path), fi) {
		if err := os.Chown(dir, -1, gid); err != nil {
			return fmt.Errorf("chown socket directory: %w", err)
		}
		if err := os.Chmod(dir, 0o750); err != nil {
			return fmt.Errorf("chmod socket directory: %w", err)
		}
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm()&0o001 == 0 && (!ok || int(st.Gid) != gid || fi.Mode().Perm()&0o010 == 0) {
		return fmt.Errorf("socket directory %s (mode %v) is shared with other files and group %d cannot traverse it: use a directory of its own for the socket", dir, fi.Mode().Perm(), gid)
	}
	return nil
}

// ownSocketDir reports whether dir holds nothing but the socket (or a stale
// one) and is not a shared sticky or world-writable directory.
func ownSocketDir(dir, socket string, fi os.FileInfo) bool {
	if fi.Mode()&(os.ModeSticky|0o002) != 0 {
		return false
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.Name() != socket {
			return false
		}
	}
	return true
}

// removeStale removes path if it is a socket nobody listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w on %s", ErrAlreadyListening, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("probe existing socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

func dialTransport(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}

// lookupGroupID resolves a group name or numeric gid.
func lookupGroupID(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(g.Gid)
}
