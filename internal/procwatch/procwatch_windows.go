package procwatch

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sys/windows"
)

func handleStartTime(h windows.Handle) (uint64, error) {
	var created, exited, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(h, &created, &exited, &kernel, &user); err != nil {
		return 0, err
	}
	return uint64(created.HighDateTime)<<32 | uint64(created.LowDateTime), nil
}

// StartTime returns an opaque start time of pid (its creation
// FILETIME), so a recycled PID can be told apart.
func StartTime(pid int) (uint64, error) {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return 0, err
	}
	defer windows.CloseHandle(h)
	return handleStartTime(h)
}

// openLive opens pid for waiting and reports whether it is running and
// matches startTime (if not 0). The handle is valid only when alive.
func openLive(pid int, startTime uint64) (windows.Handle, bool) {
	if pid <= 0 {
		return 0, false
	}
	h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return 0, false
	}
	if ev, _ := windows.WaitForSingleObject(h, 0); ev != uint32(windows.WAIT_TIMEOUT) {
		windows.CloseHandle(h)
		return 0, false
	}
	if startTime != 0 {
		if st, err := handleStartTime(h); err != nil || st != startTime {
			windows.CloseHandle(h)
			return 0, false
		}
	}
	return h, true
}

// Alive reports whether pid is running and, if startTime is not 0,
// is the same process that had that start time.
func Alive(pid int, startTime uint64) bool {
	h, ok := openLive(pid, startTime)
	if ok {
		windows.CloseHandle(h)
	}
	return ok
}

// WatchExit returns a channel closed when the process pid exits (or if it
// is already gone, or startTime is not 0 and does not match). It waits on
// the process handle together with an event set when ctx is done; after
// that the channel is never closed.
func WatchExit(ctx context.Context, pid int, startTime uint64) (<-chan struct{}, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("watch exit: invalid pid %d", pid)
	}
	ch := make(chan struct{})
	h, ok := openLive(pid, startTime)
	if !ok {
		close(ch)
		return ch, nil
	}
	stopEv, err := windows.CreateEvent(nil, 1, 0, nil)
	if err != nil {
		windows.CloseHandle(h)
		return nil, fmt.Errorf("watch exit: %w", err)
	}
	var mu sync.Mutex
	closed := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			_ = windows.SetEvent(stopEv)
		}
	})
	go func() {
		defer windows.CloseHandle(h)
		defer func() {
			stop()
			mu.Lock()
			closed = true
			windows.CloseHandle(stopEv)
			mu.Unlock()
		}()
		ev, err := windows.WaitForMultipleObjects([]windows.Handle{h, stopEv}, false, windows.INFINITE)
		if err == nil && ev == windows.WAIT_OBJECT_0 {
			close(ch)
		}
	}()
	return ch, nil
}
