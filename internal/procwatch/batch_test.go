package procwatch

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
)

// fakeWait is an in-memory waitOS: handles are ints, signal marks one,
// wait blocks until one of its handles is marked. Wake events auto-reset;
// process handles stay signalled.
type fakeWait struct {
	mu       sync.Mutex
	cond     *sync.Cond
	next     int
	wakes    map[int]bool
	set      map[int]bool
	closed   map[int]int
	maxWait  int
	waiting  int
	failNext error
}

func newFakeWait() *fakeWait {
	f := &fakeWait{next: 1000, wakes: map[int]bool{}, set: map[int]bool{}, closed: map[int]int{}}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *fakeWait) newWake() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	f.wakes[f.next] = true
	return f.next, nil
}

func (f *fakeWait) signal(h int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set[h] = true
	f.cond.Broadcast()
}

func (f *fakeWait) wait(hs []int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maxWait = max(f.maxWait, len(hs))
	f.waiting++
	defer func() { f.waiting-- }()
	for {
		if f.failNext != nil {
			err := f.failNext
			f.failNext = nil
			return -1, err
		}
		for i, h := range hs {
			if f.closed[h] > 0 {
				return -1, fmt.Errorf("waiting on closed handle %d", h)
			}
			if f.set[h] {
				if f.wakes[h] {
					f.set[h] = false
				}
				return i, nil
			}
		}
		f.cond.Wait()
	}
}

func (f *fakeWait) closeHandle(h int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed[h]++
}

func (f *fakeWait) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
	f.cond.Broadcast()
}

func (f *fakeWait) closedCount(h int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed[h]
}

func TestBatcherGroupsHandles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fw := newFakeWait()
		b := &batcher[int]{os: fw}
		const n = 200
		var mu sync.Mutex
		var exited []int
		stops := map[int]func(){}
		for h := 1; h <= n; h++ {
			stop, err := b.add(h, func() { mu.Lock(); exited = append(exited, h); mu.Unlock() },
				func(err error) { t.Errorf("handle %d failed: %v", h, err) })
			if err != nil {
				t.Fatal(err)
			}
			stops[h] = stop
		}
		synctest.Wait()
		// 200 handles: ceil(200/63) = 4 goroutines, none waiting on more
		// than 64 objects (63 handles and its wake event).
		if got := b.batchCount(); got != 4 {
			t.Errorf("%d batches for %d handles, want 4", got, n)
		}
		if fw.maxWait > 64 {
			t.Errorf("a wait on %d handles (limit 64)", fw.maxWait)
		}
		if fw.waiting != 4 {
			t.Errorf("%d goroutines waiting, want 4", fw.waiting)
		}

		// One process exits: only its watch fires, its handle is closed once.
		fw.signal(150)
		synctest.Wait()
		if !slices.Equal(exited, []int{150}) {
			t.Fatalf("exited %v, want [150]", exited)
		}
		if fw.closedCount(150) != 1 {
			t.Errorf("handle 150 closed %d times", fw.closedCount(150))
		}
		stops[150]() // stopping a fired watch is harmless
		synctest.Wait()
		if fw.closedCount(150) != 1 {
			t.Errorf("handle 150 closed %d times after a late stop", fw.closedCount(150))
		}

		// A cancelled watch never fires and its handle is closed by the
		// waiting goroutine.
		stops[7]()
		synctest.Wait()
		if fw.closedCount(7) != 1 {
			t.Errorf("cancelled handle 7 closed %d times", fw.closedCount(7))
		}
		fw.signal(7)
		synctest.Wait()
		if slices.Contains(exited, 7) {
			t.Error("a cancelled watch fired")
		}

		// New watches fill the free slots before a batch is added.
		for h := 1001 + 100; h < 1001+102; h++ {
			if _, err := b.add(h, func() {}, func(error) {}); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		if got := b.batchCount(); got != 4 {
			t.Errorf("%d batches after refilling two slots, want 4", got)
		}

		// Everything stopped: every goroutine ends, every handle is closed
		// exactly once, wake events included.
		for _, stop := range stops {
			stop()
		}
		for h := 1001 + 100; h < 1001+102; h++ {
			fw.signal(h)
		}
		synctest.Wait()
		if got := b.batchCount(); got != 0 {
			t.Errorf("%d batches left after every watch ended", got)
		}
		for h := 1; h <= n; h++ {
			if c := fw.closedCount(h); c != 1 {
				t.Errorf("handle %d closed %d times", h, c)
			}
		}
		for w := range fw.wakes {
			if c := fw.closedCount(w); c != 1 {
				t.Errorf("wake event %d closed %d times", w, c)
			}
		}
	})
}

func TestBatcherWaitFailureFallsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fw := newFakeWait()
		b := &batcher[int]{os: fw}
		var mu sync.Mutex
		failed := map[int]error{}
		for h := 1; h <= 3; h++ {
			if _, err := b.add(h, func() { t.Errorf("handle %d reported exited", h) },
				func(err error) { mu.Lock(); failed[h] = err; mu.Unlock() }); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		boom := errors.New("WAIT_FAILED")
		fw.fail(boom)
		synctest.Wait()
		if len(failed) != 3 {
			t.Fatalf("failed callbacks %v, want all three", failed)
		}
		for h, err := range failed {
			if !errors.Is(err, boom) {
				t.Errorf("handle %d: %v", h, err)
			}
			if fw.closedCount(h) != 1 {
				t.Errorf("handle %d closed %d times", h, fw.closedCount(h))
			}
		}
		if b.batchCount() != 0 {
			t.Error("a failed batch was kept")
		}
		// The batcher still works afterwards.
		fired := false
		if _, err := b.add(9, func() { fired = true }, func(error) {}); err != nil {
			t.Fatal(err)
		}
		fw.signal(9)
		synctest.Wait()
		if !fired {
			t.Error("a watch added after a failure did not fire")
		}
	})
}

func TestClassifyOpenErr(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want openVerdict
	}{
		{syscall.Errno(87), openGone},                         // ERROR_INVALID_PARAMETER
		{fmt.Errorf("open: %w", syscall.Errno(87)), openGone}, // wrapped
		{syscall.Errno(5), openAlive},                         // ERROR_ACCESS_DENIED
		{fmt.Errorf("open: %w", syscall.Errno(5)), openAlive}, // wrapped
		{syscall.Errno(8), openUnknown},                       // ERROR_NOT_ENOUGH_MEMORY
		{syscall.Errno(1450), openUnknown},                    // ERROR_NO_SYSTEM_RESOURCES
		{errors.New("something else"), openUnknown},
	} {
		if got := classifyOpenErr(tc.err); got != tc.want {
			t.Errorf("classifyOpenErr(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
