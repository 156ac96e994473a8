package procwatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// StartTime returns an opaque start time of pid (microseconds since
// the epoch from kern.proc.pid), so a recycled PID can be told apart.
func StartTime(pid int) (uint64, error) {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil {
		return 0, err
	}
	if kp.Proc.P_pid != int32(pid) {
		return 0, fmt.Errorf("process %d not found", pid)
	}
	tv := kp.Proc.P_starttime
	return uint64(tv.Sec)*1e6 + uint64(tv.Usec), nil
}

// Alive reports whether pid is running and, if startTime is not 0,
// is the same process that had that start time.
func Alive(pid int, startTime uint64) bool {
	if pid <= 0 {
		return false
	}
	if err := unix.Kill(pid, 0); err != nil && !errors.Is(err, unix.EPERM) {
		return false
	}
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil || kp.Proc.P_pid != int32(pid) || kp.Proc.P_stat == 5 /* SZOMB */ {
		return false
	}
	if startTime == 0 {
		return true
	}
	tv := kp.Proc.P_starttime
	return uint64(tv.Sec)*1e6+uint64(tv.Usec) == startTime
}

// WatchExit returns a channel closed when the process pid exits (or if it
// is already gone, or startTime is not 0 and does not match), using a
// kqueue EVFILT_PROC/NOTE_EXIT filter. When ctx is done the watch stops and
// the channel is never closed.
func WatchExit(ctx context.Context, pid int, startTime uint64) (<-chan struct{}, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("watch exit: invalid pid %d", pid)
	}
	ch := make(chan struct{})
	kq, err := unix.Kqueue()
	if err != nil {
		go pollExit(ctx, pid, startTime, ch)
		return ch, nil
	}
	ev := unix.Kevent_t{Ident: uint64(pid), Filter: unix.EVFILT_PROC, Flags: unix.EV_ADD | unix.EV_ONESHOT, Fflags: unix.NOTE_EXIT}
	if _, err := unix.Kevent(kq, []unix.Kevent_t{ev}, nil, nil); err != nil {
		unix.Close(kq)
		if errors.Is(err, unix.ESRCH) {
			close(ch)
			return ch, nil
		}
		go pollExit(ctx, pid, startTime, ch)
		return ch, nil
	}
	// Registered first, checked second: an exit in between still fires.
	if !Alive(pid, startTime) {
		unix.Close(kq)
		close(ch)
		return ch, nil
	}
	go func() {
		defer unix.Close(kq)
		out := make([]unix.Kevent_t, 1)
		ts := unix.NsecToTimespec(int64(250 * time.Millisecond))
		for ctx.Err() == nil {
			n, err := unix.Kevent(kq, nil, out, &ts)
			if err != nil && !errors.Is(err, unix.EINTR) {
				pollExit(ctx, pid, startTime, ch)
				return
			}
			if n > 0 {
				close(ch)
				return
			}
		}
	}()
	return ch, nil
}

// pollExit is the fallback when kqueue is unavailable.
func pollExit(ctx context.Context, pid int, startTime uint64, ch chan struct{}) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if !Alive(pid, startTime) {
			close(ch)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
