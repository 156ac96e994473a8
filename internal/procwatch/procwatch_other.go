//go:build unix && !linux && !darwin

package procwatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnsupported is returned by StartTime where this package cannot read
// a process's start time.
var ErrUnsupported = errors.New("process start time not supported on this OS")

// StartTime is not available on this OS: callers get 0, which [Alive] and
// [WatchExit] treat as "any process with this PID".
func StartTime(pid int) (uint64, error) { return 0, ErrUnsupported }

// Alive reports whether pid exists (kill(pid, 0)). A startTime other than
// 0 cannot be checked here, so it is reported as not the same process.
func Alive(pid int, startTime uint64) bool {
	if pid <= 0 || startTime != 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// WatchExit returns a channel closed when pid is gone, checked every
// 250ms. When ctx is done the watch stops and the channel is never closed.
func WatchExit(ctx context.Context, pid int, startTime uint64) (<-chan struct{}, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("watch exit: invalid pid %d", pid)
	}
	ch := make(chan struct{})
	go pollExit(ctx, pid, startTime, 250*time.Millisecond, ch)
	return ch, nil
}
