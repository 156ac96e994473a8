//go:build unix

package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// openImport opens path read-only without following a final symlink
// (O_NOFOLLOW) and without blocking on a FIFO (O_NONBLOCK); readImport then
// checks that what it opened is a regular file.
func openImport(path string) (*os.File, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.EMLINK) {
		return nil, fmt.Errorf("%w: %s is a symlink", errNotImportable, filepath.Base(path))
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	// Regular files ignore O_NONBLOCK; clear it anyway so reads are plain.
	_ = syscall.SetNonblock(fd, false)
	return os.NewFile(uintptr(fd), path), nil
}
