package procwatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// procStat returns the state letter and start time (clock ticks since boot,
// field 22 of /proc/<pid>/stat).
func procStat(pid int) (state string, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, err
	}
	// comm (field 2) may contain spaces and parentheses: split after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return "", 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // fields[0] is field 3
	if err != nil {
		return "", 0, fmt.Errorf("malformed /proc/%d/stat: %w", pid, err)
	}
	return f[0], start, nil
}

// StartTime returns an opaque start time of pid, stable for the
// life of the process, so a recycled PID can be told apart.
func StartTime(pid int) (uint64, error) {
	_, st, err := procStat(pid)
	return st, err
}

// Alive reports whether pid is running (not a zombie) and, if
// startTime is not 0, is the same process that had that start time.
func Alive(pid int, startTime uint64) bool {
	if pid <= 0 {
		return false
	}
	state, st, err := procStat(pid)
	if err != nil || state == "Z" || state == "X" {
		return false
	}
	return startTime == 0 || st == startTime
}

// WatchExit returns a channel closed when the process pid exits (or if it
// is already gone, or startTime is not 0 and does not match). It waits on a
// pidfd through the Go netpoller (no thread blocked), falling back to
// polling where pidfd_open is unavailable. When ctx is done the watch stops
// and the channel is never closed.
func WatchExit(ctx context.Context, pid int, startTime uint64) (<-chan struct{}, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("watch exit: invalid pid %d", pid)
	}
	ch := make(chan struct{})
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		close(ch)
		return ch, nil
	}
	if err != nil {
		go pollExit(ctx, pid, startTime, 250*time.Millisecond, ch)
		return ch, nil
	}
	// The pidfd pins the process; check it is the one we mean.
	if !Alive(pid, startTime) {
		unix.Close(fd)
		close(ch)
		return ch, nil
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("watch exit: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
	var once sync.Once
	exited := func() { once.Do(func() { close(ch) }) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer f.Close()
		defer stop()
		polled := false
		// A pidfd becomes readable when the process exits. The first call
		// returns false to park on the netpoller until then.
		err := rc.Read(func(uintptr) bool {
			if !polled {
				polled = true
				return false
			}
			return true
		})
		if err == nil && ctx.Err() == nil {
			exited()
		}
	}()
	// Safety net: a slow liveness check, so that an exit is noticed even
	// if the poller's wake-up were ever missed.
	go func() {
		t := time.NewTicker(safetyPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if !Alive(pid, startTime) {
					exited()
					_ = f.SetReadDeadline(time.Unix(1, 0))
					return
				}
			}
		}
	}()
	return ch, nil
}

// safetyPoll is the period of WatchExit's liveness check next to the pidfd.
const safetyPoll = 5 * time.Second
