package procwatch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sys/windows"
)

func handleStartTime(h windows.Handle) (uint64, error) {
	var created, exited, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(h, &created, &exited, &kernel, &user); err != nil {
		return 0, err
	}
	return uint64(created.HighDateTime)<<32 | uint64(created.LowDateTime), nil
}

// HandleStartTime returns the start time of the process h refers to, in
// the form [StartTime] returns.
func HandleStartTime(h windows.Handle) (uint64, error) { return handleStartTime(h) }

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

// Alive reports whether pid is running and, if startTime is not 0,
// is the same process that had that start time. Only
// ERROR_INVALID_PARAMETER from OpenProcess means the PID is gone: a process
// that may not be opened (ERROR_ACCESS_DENIED) is alive, and so is one
// whose check fails for another reason (logged).
func Alive(pid int, startTime uint64) bool {
	if pid <= 0 {
		return false
	}
	if h, ok := pinnedHandle(pid, startTime); ok {
		defer windows.CloseHandle(h)
		return handleRunning(h)
	}
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		switch classifyOpenErr(err) {
		case openGone:
			return false
		case openUnknown:
			logger().Warn("cannot open process; treating it as alive", "pid", pid, "err", err)
		}
		return true
	}
	defer windows.CloseHandle(h)
	if startTime != 0 {
		st, err := handleStartTime(h)
		if err != nil {
			logger().Warn("cannot read process start time; treating it as alive", "pid", pid, "err", err)
			return true
		}
		if st != startTime {
			return false
		}
	}
	// A process that exited but whose handles are still open keeps its PID:
	// its exit code tells it apart.
	var code uint32
	if err := windows.GetExitCodeProcess(h, &code); err == nil && code != stillActive {
		return false
	}
	return true
}

// stillActive is STILL_ACTIVE (STATUS_PENDING), the exit code of a
// running process.
const stillActive = 259

// handleRunning reports whether the process of a SYNCHRONIZE handle has
// not exited.
func handleRunning(h windows.Handle) bool {
	ev, err := windows.WaitForSingleObject(h, 0)
	return err == nil && ev == uint32(windows.WAIT_TIMEOUT)
}

// Logger receives the package's warnings (a failed wait, a process that
// cannot be checked). Set it before the first watch; default slog.Default.
var Logger *slog.Logger

func logger() *slog.Logger {
	if Logger != nil {
		return Logger
	}
	return slog.Default()
}

// pins are process handles held by ipc for the life of a connection
// ([Pin]): while one is held the PID cannot be reused, so a watch on
// (pid, start) duplicates it instead of opening the PID again.
var pins struct {
	sync.Mutex
	m map[pinKey]*pin
}

type pinKey struct {
	pid   int
	start uint64
}

type pin struct {
	h    windows.Handle
	refs int
}

// Pin hands procwatch a handle to the process (pid, startTime), opened
// with SYNCHRONIZE and PROCESS_QUERY_LIMITED_INFORMATION, for as long as
// the caller holds it: [WatchExit] and [Alive] use a duplicate of it
// rather than reopening the PID, which could by then name another
// process. procwatch takes ownership of h; the returned function releases
// it (once; later calls do nothing).
func Pin(pid int, startTime uint64, h windows.Handle) (unpin func()) {
	k := pinKey{pid, startTime}
	pins.Lock()
	if pins.m == nil {
		pins.m = map[pinKey]*pin{}
	}
	p := pins.m[k]
	if p == nil {
		p = &pin{h: h}
		pins.m[k] = p
	} else {
		windows.CloseHandle(h) // the same process is pinned already
	}
	p.refs++
	pins.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			pins.Lock()
			defer pins.Unlock()
			p.refs--
			if p.refs == 0 {
				delete(pins.m, k)
				windows.CloseHandle(p.h)
			}
		})
	}
}

// pinnedHandle returns a duplicate of the pinned handle of (pid,
// startTime), if one is held; the caller closes it.
func pinnedHandle(pid int, startTime uint64) (windows.Handle, bool) {
	if startTime == 0 {
		return 0, false
	}
	pins.Lock()
	defer pins.Unlock()
	p := pins.m[pinKey{pid, startTime}]
	if p == nil {
		return 0, false
	}
	self := windows.CurrentProcess()
	var dup windows.Handle
	if err := windows.DuplicateHandle(self, p.h, self, &dup, 0, false, windows.DUPLICATE_SAME_ACCESS); err != nil {
		return 0, false
	}
	return dup, true
}

// openLive opens pid for waiting. ok reports whether a handle was opened
// to a running process matching startTime; gone that the process is known
// to have exited (or is another one). Neither: it could not be opened for
// waiting but may be running (access denied, another failure).
func openLive(pid int, startTime uint64) (h windows.Handle, ok, gone bool, err error) {
	if h, ok := pinnedHandle(pid, startTime); ok {
		if !handleRunning(h) {
			windows.CloseHandle(h)
			return 0, false, true, nil
		}
		return h, true, false, nil
	}
	h, err = windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return 0, false, classifyOpenErr(err) == openGone, err
	}
	if !handleRunning(h) {
		windows.CloseHandle(h)
		return 0, false, true, nil
	}
	if startTime != 0 {
		st, err := handleStartTime(h)
		if err != nil {
			windows.CloseHandle(h)
			return 0, false, false, err
		}
		if st != startTime {
			windows.CloseHandle(h)
			return 0, false, true, nil
		}
	}
	return h, true, false, nil
}

// winWait is the Windows side of the exit-watch batcher.
type winWait struct{}

func (winWait) newWake() (windows.Handle, error) {
	return windows.CreateEvent(nil, 0, 0, nil) // auto-reset
}

func (winWait) signal(h windows.Handle) { _ = windows.SetEvent(h) }

func (winWait) wait(hs []windows.Handle) (int, error) {
	ev, err := windows.WaitForMultipleObjects(hs, false, windows.INFINITE)
	if err != nil {
		return -1, fmt.Errorf("WaitForMultipleObjects: %w", err)
	}
	if ev >= windows.WAIT_OBJECT_0 && ev < windows.WAIT_OBJECT_0+uint32(len(hs)) {
		return int(ev - windows.WAIT_OBJECT_0), nil
	}
	return -1, fmt.Errorf("WaitForMultipleObjects returned %#x", ev)
}

func (winWait) closeHandle(h windows.Handle) { _ = windows.CloseHandle(h) }

// exits waits for every watched process: one goroutine per 63 handles.
var exits = &batcher[windows.Handle]{os: winWait{}}

// WatchExit returns a channel closed when the process pid exits (or if it
// is already gone, or startTime is not 0 and does not match). Its process
// handle joins a batch of up to 63 that one goroutine waits for
// (WaitForMultipleObjects), so 1,000 leases cost 16 blocked threads, not
// 1,000. A process that cannot be opened for waiting (access denied), or a
// wait that fails, is logged and polled instead. When ctx is done the watch
// stops and the channel is never closed.
func WatchExit(ctx context.Context, pid int, startTime uint64) (<-chan struct{}, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("watch exit: invalid pid %d", pid)
	}
	ch := make(chan struct{})
	h, ok, gone, err := openLive(pid, startTime)
	if gone {
		close(ch)
		return ch, nil
	}
	if !ok {
		logger().Warn("cannot open process to wait for its exit; polling", "pid", pid, "err", err)
		go pollExit(ctx, pid, startTime, time.Second, ch)
		return ch, nil
	}
	var once sync.Once
	exited := func() { once.Do(func() { close(ch) }) }
	stop, err := exits.add(h,
		func() {
			if ctx.Err() == nil {
				exited()
			}
		},
		func(err error) {
			logger().Warn("waiting for process exit failed; polling", "pid", pid, "err", err)
			go pollExit(ctx, pid, startTime, time.Second, ch)
		})
	if err != nil {
		windows.CloseHandle(h)
		logger().Warn("cannot wait for process exit; polling", "pid", pid, "err", err)
		go pollExit(ctx, pid, startTime, time.Second, ch)
		return ch, nil
	}
	context.AfterFunc(ctx, stop)
	return ch, nil
}
