package procwatch

import (
	"errors"
	"sync"
	"syscall"
)

// batchMax is how many process handles one waiting goroutine holds:
// WaitForMultipleObjects takes at most 64 (MAXIMUM_WAIT_OBJECTS) and one
// slot is the batch's wake event.
const batchMax = 63

// waitOS is the OS side of a [batcher]: Windows events and
// WaitForMultipleObjects in procwatch_windows.go, a fake in the tests.
type waitOS[H comparable] interface {
	// newWake creates an auto-reset event for one batch.
	newWake() (H, error)
	// signal sets a wake event.
	signal(H)
	// wait blocks until one of hs is signalled and returns its index.
	wait(hs []H) (int, error)
	// closeHandle closes a process handle or a wake event.
	closeHandle(H)
}

// batcher waits for many process handles with one goroutine (and so one
// blocked OS thread) per batchMax handles, instead of one per lease. Each
// batch's goroutine waits on its wake event and its handles; adding or
// removing a watch signals the wake event so the goroutine re-reads its
// list. Handles are closed only by the goroutine waiting on them (closing
// a handle during a wait on it is undefined behaviour on Windows).
type batcher[H comparable] struct {
	os      waitOS[H]
	mu      sync.Mutex
	batches []*batch[H]
}

type batch[H comparable] struct {
	wake    H
	entries []*watchEntry[H]
	closing []H // handles removed by cancel, closed by the goroutine
	dead    bool
}

type watchEntry[H comparable] struct {
	h      H
	exited func()
	failed func(error)
}

// add watches h (the batcher takes ownership of it). exited runs once when
// h is signalled; failed runs instead if the wait fails (h is then closed
// and the caller must watch some other way). The returned function stops
// the watch: the handle is closed and no callback starts afterwards (one
// for an exit seen just before may still be running).
func (b *batcher[H]) add(h H, exited func(), failed func(error)) (stop func(), err error) {
	e := &watchEntry[H]{h: h, exited: exited, failed: failed}
	b.mu.Lock()
	var bt *batch[H]
	for _, x := range b.batches {
		if len(x.entries) < batchMax {
			bt = x
			break
		}
	}
	if bt == nil {
		wake, err := b.os.newWake()
		if err != nil {
			b.mu.Unlock()
			return nil, err
		}
		bt = &batch[H]{wake: wake}
		b.batches = append(b.batches, bt)
		go b.run(bt)
	}
	bt.entries = append(bt.entries, e)
	b.os.signal(bt.wake)
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if i := indexOf(bt.entries, e); i >= 0 {
			bt.entries = append(bt.entries[:i], bt.entries[i+1:]...)
			bt.closing = append(bt.closing, e.h)
			b.os.signal(bt.wake)
		}
	}, nil
}

func indexOf[H comparable](es []*watchEntry[H], e *watchEntry[H]) int {
	for i, x := range es {
		if x == e {
			return i
		}
	}
	return -1
}

// batchCount reports how many batches (waiting goroutines) exist.
func (b *batcher[H]) batchCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.batches)
}

func (b *batcher[H]) run(bt *batch[H]) {
	for {
		b.mu.Lock()
		for _, h := range bt.closing {
			b.os.closeHandle(h)
		}
		bt.closing = nil
		if len(bt.entries) == 0 {
			b.retire(bt)
			b.mu.Unlock()
			return
		}
		snap := append([]*watchEntry[H](nil), bt.entries...)
		b.mu.Unlock()

		hs := make([]H, 0, len(snap)+1)
		hs = append(hs, bt.wake)
		for _, e := range snap {
			hs = append(hs, e.h)
		}
		i, err := b.os.wait(hs)
		if err == nil && (i < 0 || i >= len(hs)) {
			err = errors.New("wait returned an index out of range")
		}
		if err != nil {
			// Every watch of this batch falls back to its failed callback;
			// the goroutine ends so a broken wait does not spin.
			b.mu.Lock()
			rest := bt.entries
			bt.entries = nil
			for _, h := range bt.closing {
				b.os.closeHandle(h)
			}
			bt.closing = nil
			b.retire(bt)
			b.mu.Unlock()
			for _, e := range rest {
				b.os.closeHandle(e.h)
				e.failed(err)
			}
			return
		}
		if i == 0 {
			continue // the list changed
		}
		e := snap[i-1]
		b.mu.Lock()
		j := indexOf(bt.entries, e)
		if j >= 0 {
			bt.entries = append(bt.entries[:j], bt.entries[j+1:]...)
		}
		b.mu.Unlock()
		if j >= 0 {
			b.os.closeHandle(e.h)
			e.exited()
		}
		// j < 0: cancelled meanwhile; its handle is in closing.
	}
}

// retire removes an empty batch; b.mu is held.
func (b *batcher[H]) retire(bt *batch[H]) {
	bt.dead = true
	for i, x := range b.batches {
		if x == bt {
			b.batches = append(b.batches[:i], b.batches[i+1:]...)
			break
		}
	}
	b.os.closeHandle(bt.wake)
}

// openVerdict is what a failed OpenProcess says about a process.
type openVerdict int

const (
	// openGone: no process has this PID (ERROR_INVALID_PARAMETER).
	openGone openVerdict = iota
	// openAlive: the process exists but may not be opened with the access
	// asked for (ERROR_ACCESS_DENIED, e.g. a protected or elevated process).
	openAlive
	// openUnknown: any other failure; treated as alive (a live app's lease
	// must not be released on a transient error) and logged.
	openUnknown
)

// Windows error numbers (winerror.h), spelled out so that the
// classification is tested on every OS.
const (
	errAccessDenied     syscall.Errno = 5
	errInvalidParameter syscall.Errno = 87
)

// classifyOpenErr tells what OpenProcess's error means: only
// ERROR_INVALID_PARAMETER says that the PID names no process.
func classifyOpenErr(err error) openVerdict {
	var en syscall.Errno
	if !errors.As(err, &en) {
		return openUnknown
	}
	switch en {
	case errInvalidParameter:
		return openGone
	case errAccessDenied:
		return openAlive
	}
	return openUnknown
}
