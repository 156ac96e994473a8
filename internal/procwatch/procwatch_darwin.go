package procwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
// is already gone, or startTime is not 0 and does not match). All watches
// share one kqueue (EVFILT_PROC/NOTE_EXIT) and one goroutine blocked in
// kevent without a timeout, so 1,000 leases cost one thread and no
// periodic wake-ups. When ctx is done the watch stops and the channel is
// never closed.
func WatchExit(ctx context.Context, pid int, startTime uint64) (<-chan struct{}, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("watch exit: invalid pid %d", pid)
	}
	ch := make(chan struct{})
	w := &kqWatch{ctx: ctx, pid: pid, start: startTime, ch: ch}
	if err := hub.add(w); err != nil {
		go pollExit(ctx, pid, startTime, time.Second, ch)
		return ch, nil
	}
	context.AfterFunc(ctx, func() { hub.remove(w) })
	return ch, nil
}

type kqWatch struct {
	ctx   context.Context
	pid   int
	start uint64
	ch    chan struct{}
	once  sync.Once
}

func (w *kqWatch) fire() { w.once.Do(func() { close(w.ch) }) }

// kqHub is the shared kqueue: one knote per watched PID, however many
// watches it has.
type kqHub struct {
	mu      sync.Mutex
	kq      int // -1 until started; -2 after a fatal kqueue error
	watches map[int][]*kqWatch
}

var hub = &kqHub{kq: -1, watches: map[int][]*kqWatch{}}

var errKqueueDown = errors.New("kqueue unavailable")

func (h *kqHub) register(pid int) error {
	ev := unix.Kevent_t{Ident: uint64(pid), Filter: unix.EVFILT_PROC, Flags: unix.EV_ADD | unix.EV_ONESHOT, Fflags: unix.NOTE_EXIT}
	_, err := unix.Kevent(h.kq, []unix.Kevent_t{ev}, nil, nil)
	return err
}

// add registers w. An error means the caller must poll.
func (h *kqHub) add(w *kqWatch) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.kq == -2 {
		return errKqueueDown
	}
	if h.kq == -1 {
		kq, err := unix.Kqueue()
		if err != nil {
			return err
		}
		unix.CloseOnExec(kq)
		h.kq = kq
		go h.loop(kq)
	}
	// Registered first, checked second: an exit in between still fires.
	if err := h.register(w.pid); err != nil {
		if errors.Is(err, unix.ESRCH) {
			w.fire()
			return nil
		}
		return err
	}
	if !Alive(w.pid, w.start) {
		w.fire()
		if len(h.watches[w.pid]) == 0 {
			h.unregister(w.pid)
		}
		return nil
	}
	h.watches[w.pid] = append(h.watches[w.pid], w)
	return nil
}

func (h *kqHub) unregister(pid int) {
	ev := unix.Kevent_t{Ident: uint64(pid), Filter: unix.EVFILT_PROC, Flags: unix.EV_DELETE}
	_, _ = unix.Kevent(h.kq, []unix.Kevent_t{ev}, nil, nil)
}

// remove drops a cancelled watch; the knote goes with the PID's last one.
func (h *kqHub) remove(w *kqWatch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ws := h.watches[w.pid]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) > 0 {
		h.watches[w.pid] = ws
		return
	}
	if _, ok := h.watches[w.pid]; ok {
		delete(h.watches, w.pid)
		if h.kq >= 0 {
			h.unregister(w.pid)
		}
	}
}

// exited handles NOTE_EXIT for pid. Watches whose process is gone fire. A
// watch still alive was added for a new process that reused the PID
// before this event was read (its EV_ADD met the old knote): it is
// registered again and re-checked.
func (h *kqHub) exited(pid int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var keep []*kqWatch
	for _, w := range h.watches[pid] {
		if Alive(w.pid, w.start) {
			keep = append(keep, w)
		} else {
			w.fire()
		}
	}
	delete(h.watches, pid)
	if len(keep) == 0 {
		return
	}
	if err := h.register(pid); err != nil {
		for _, w := range keep {
			if errors.Is(err, unix.ESRCH) {
				w.fire()
			} else {
				go pollWatch(w)
			}
		}
		return
	}
	for _, w := range keep {
		if !Alive(w.pid, w.start) {
			w.fire()
		} else {
			h.watches[pid] = append(h.watches[pid], w)
		}
	}
}

// loop reads exit events until kevent fails for good; then every watch
// falls back to polling and later watches poll from the start.
func (h *kqHub) loop(kq int) {
	out := make([]unix.Kevent_t, 64)
	for {
		n, err := unix.Kevent(kq, nil, out, nil)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			h.fail(err)
			return
		}
		for _, ev := range out[:n] {
			if ev.Filter == unix.EVFILT_PROC {
				h.exited(int(ev.Ident))
			}
		}
	}
}

func (h *kqHub) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	slog.Default().Warn("process exit watch: kevent failed; polling", "err", err)
	for pid, ws := range h.watches {
		for _, w := range ws {
			go pollWatch(w)
		}
		delete(h.watches, pid)
	}
	unix.Close(h.kq)
	h.kq = -2
}

// pollWatch polls one watch whose kqueue failed. Its channel may be
// closed only through fire.
func pollWatch(w *kqWatch) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		if !Alive(w.pid, w.start) {
			w.fire()
			return
		}
	}
}
