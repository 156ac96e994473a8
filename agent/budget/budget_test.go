package budget

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// checkWindows fails if any interval [t, t+period) holds more than limit of
// the (sorted) send times.
func checkWindows(t *testing.T, sends []time.Time, limit int, period time.Duration) (max int) {
	t.Helper()
	j := 0
	for i := range sends {
		for j < len(sends) && sends[j].Before(sends[i].Add(period)) {
			j++
		}
		if n := j - i; n > max {
			max = n
		}
	}
	if max > limit {
		t.Errorf("window %v: %d sends in one window, limit %d", period, max, limit)
	}
	return max
}

func TestDefaultWindowsExactCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{})
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute-time.Second)
		defer cancel()
		var mu sync.Mutex
		var sends []time.Time
		var wg sync.WaitGroup
		for g := range 20 {
			wg.Go(func() {
				for {
					if err := b.Wait(ctx, Priority(g%4)); err != nil {
						if !errors.Is(err, context.DeadlineExceeded) {
							t.Errorf("Wait: %v", err)
						}
						return
					}
					mu.Lock()
					sends = append(sends, time.Now())
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		sort.Slice(sends, func(i, j int) bool { return sends[i].Before(sends[j]) })
		// 54 per 30 s reaches 450 per 5 min at 240 s (8 bursts of 54 and 18);
		// the pattern repeats every 5 min: exactly 900 in [0, 10 min).
		if len(sends) != 900 {
			t.Errorf("sent %d in 10 min, want 900", len(sends))
		}
		if m := checkWindows(t, sends, 54, 30*time.Second); m != 54 {
			t.Errorf("max per 30 s = %d, want 54", m)
		}
		if m := checkWindows(t, sends, 450, 5*time.Minute); m != 450 {
			t.Errorf("max per 5 min = %d, want 450", m)
		}
		// Every burst lands on a 30 s boundary.
		for _, s := range sends {
			if d := s.Sub(start); d%(30*time.Second) != 0 {
				t.Fatalf("send at %v, not on a 30 s boundary", d)
			}
		}
		st := b.Stats()
		if st.Sent != 900 || st.Waiting != 0 {
			t.Errorf("stats %+v", st)
		}
		if want := []int{0, 450}; st.InWindow[0] != want[0] || st.InWindow[1] != want[1] {
			// At 9:59: last burst at 9:00 (54) ... the 30 s window is empty
			// and the 5 min window holds the bursts of [5:00, 9:00].
			t.Errorf("InWindow %v, want %v", st.InWindow, want)
		}
	})
}

func TestManyGoroutinesOddWindows(t *testing.T) {
	// Windows whose periods do not divide each other, waiters with many
	// priorities arriving at different times: counts hold in every sliding
	// interval, and the long-run throughput matches the tightest window.
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Windows: []Window{{7, 3 * time.Second}, {20, 11 * time.Second}}, Safety: 1})
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
		defer cancel()
		var mu sync.Mutex
		var sends []time.Time
		var wg sync.WaitGroup
		for g := range 50 {
			wg.Go(func() {
				time.Sleep(time.Duration(g) * 137 * time.Millisecond)
				for {
					if err := b.Wait(ctx, Priority(g%4)); err != nil {
						return
					}
					mu.Lock()
					sends = append(sends, time.Now())
					mu.Unlock()
					time.Sleep(time.Duration(g%5) * 100 * time.Millisecond)
				}
			})
		}
		wg.Wait()
		sort.Slice(sends, func(i, j int) bool { return sends[i].Before(sends[j]) })
		checkWindows(t, sends, 7, 3*time.Second)
		checkWindows(t, sends, 20, 11*time.Second)
		// 20 per 11 s over 300 s: at most ceil(300/11)*20 = 560, and the
		// greedy schedule gets close to it.
		if n := len(sends); n > 560 || n < 520 {
			t.Errorf("sent %d in 5 min, want about 20 per 11 s", n)
		}
		if got := b.SustainableRate(); math.Abs(got-20.0/11) > 1e-9 {
			t.Errorf("SustainableRate = %v", got)
		}
	})
}

func TestPriorities(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Windows: []Window{{1, time.Second}}, Safety: 1})
		if !b.TryTake(PriorityRefresh) {
			t.Fatal("first TryTake failed")
		}
		if b.TryTake(PriorityPing) {
			t.Fatal("TryTake over the limit succeeded")
		}
		start := time.Now()
		type grant struct {
			name string
			at   time.Duration
		}
		var mu sync.Mutex
		var order []grant
		var wg sync.WaitGroup
		start1 := func(name string, p Priority) {
			wg.Go(func() {
				if err := b.Wait(t.Context(), p); err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				mu.Lock()
				order = append(order, grant{name, time.Since(start)})
				mu.Unlock()
			})
			synctest.Wait() // arrival order is the start order
		}
		start1("refresh1", PriorityRefresh)
		start1("kill1", PriorityKill)
		start1("refresh2", PriorityRefresh)
		start1("ping1", PriorityPing)
		start1("spawn1", PrioritySpawn)
		start1("ping2", PriorityPing)
		if st := b.Stats(); st.Waiting != 6 {
			t.Fatalf("Waiting = %d, want 6", st.Waiting)
		}
		if b.TryTake(PriorityPing) {
			t.Fatal("TryTake overtook waiters")
		}
		wg.Wait()
		want := []string{"ping1", "ping2", "spawn1", "kill1", "refresh1", "refresh2"}
		for i, g := range order {
			if g.name != want[i] || g.at != time.Duration(i+1)*time.Second {
				t.Errorf("grant %d = %s at %v, want %s at %ds", i, g.name, g.at, want[i], i+1)
			}
		}
	})
}

func TestRetryAfterPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{})
		start := time.Now()
		if err := b.Wait(t.Context(), PriorityPing); err != nil {
			t.Fatal(err)
		}
		b.Observe(Observation{Status: 429, Remaining: 0, Limit: 60, RetryAfter: 20 * time.Second})
		if b.TryTake(PriorityPing) {
			t.Fatal("TryTake during pause")
		}
		if st := b.Stats(); !st.PausedUntil.Equal(start.Add(20 * time.Second)) {
			t.Fatalf("PausedUntil = %v", st.PausedUntil)
		}
		// A shorter pause does not shorten it.
		b.Observe(Observation{Status: 429, Remaining: -1, Limit: -1, RetryAfter: 5 * time.Second})
		done := make(chan time.Duration)
		for range 3 {
			go func() {
				if err := b.Wait(t.Context(), PriorityPing); err != nil {
					t.Error(err)
				}
				done <- time.Since(start)
			}()
		}
		for range 3 {
			if d := <-done; d != 20*time.Second {
				t.Errorf("granted at %v, want 20s", d)
			}
		}
		if st := b.Stats(); !st.PausedUntil.IsZero() || st.Sent != 4 {
			t.Errorf("stats after pause %+v", st)
		}
	})
}

func TestRemainingZeroPausesUntilReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{})
		start := time.Now()
		// Remaining > 0, Remaining unknown, or no Reset: nothing.
		b.Observe(Observation{Status: 200, Remaining: 3, Limit: 60, Reset: start.Add(time.Minute)})
		b.Observe(Observation{Status: 200, Remaining: -1, Limit: -1, Reset: start.Add(time.Minute)})
		b.Observe(Observation{Status: 200, Remaining: 0, Limit: 60})
		b.Observe(Observation{Status: 200, Remaining: 0, Limit: 60, Reset: start.Add(-time.Second)})
		if !b.TryTake(PriorityRefresh) {
			t.Fatal("paused by an observation that should change nothing")
		}
		b.Observe(Observation{Status: 200, Remaining: 0, Limit: 60, Reset: start.Add(45 * time.Second)})
		if b.TryTake(PriorityPing) {
			t.Fatal("TryTake while Remaining=0")
		}
		if err := b.Wait(t.Context(), PriorityKill); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 45*time.Second {
			t.Errorf("granted after %v, want 45s", d)
		}
		// A Reset far in the future is capped at MaxPause.
		now := time.Now()
		b.Observe(Observation{Status: 429, Remaining: 0, Limit: 60, Reset: now.Add(100 * time.Hour)})
		if st := b.Stats(); !st.PausedUntil.Equal(now.Add(MaxPause)) {
			t.Errorf("PausedUntil = %v, want now+%v", st.PausedUntil.Sub(now), MaxPause)
		}
	})
}

func TestContextCancellation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Windows: []Window{{2, 10 * time.Second}}, Safety: 1})
		start := time.Now()
		b.TryTake(PriorityRefresh)
		b.TryTake(PriorityRefresh)

		// Already cancelled: returns at once, nothing queued.
		cctx, ccancel := context.WithCancel(t.Context())
		ccancel()
		if err := b.Wait(cctx, PriorityPing); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait(cancelled) = %v", err)
		}

		// A ping (head of the queue) gives up after 1 s; a refresh queued
		// behind it is still served when the window frees up.
		pctx, pcancel := context.WithTimeout(t.Context(), time.Second)
		defer pcancel()
		perr := make(chan error)
		go func() { perr <- b.Wait(pctx, PriorityPing) }()
		rerr := make(chan error)
		go func() { rerr <- b.Wait(t.Context(), PriorityRefresh) }()
		synctest.Wait()
		if st := b.Stats(); st.Waiting != 2 {
			t.Fatalf("Waiting = %d, want 2", st.Waiting)
		}
		if err := <-perr; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ping Wait = %v", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("ping gave up after %v", d)
		}
		if st := b.Stats(); st.Waiting != 1 || st.Sent != 2 {
			t.Fatalf("stats after cancel %+v", st)
		}
		if err := <-rerr; err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 10*time.Second {
			t.Errorf("refresh served after %v, want 10s", d)
		}
		if st := b.Stats(); st.Sent != 3 || st.Waiting != 0 {
			t.Errorf("final stats %+v", st)
		}
	})
}

func TestCancelRacingGrant(t *testing.T) {
	// ctx ends at the very instant the slot frees up: whichever wins, Wait
	// returns nil exactly when a slot was recorded for the caller.
	for range 50 {
		synctest.Test(t, func(t *testing.T) {
			b := New(Config{Windows: []Window{{1, time.Second}}, Safety: 1})
			b.TryTake(PriorityPing)
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			err := b.Wait(ctx, PriorityPing)
			st := b.Stats()
			if (err == nil) != (st.Sent == 2) || (err == nil) != (st.InWindow[0] == 1) {
				t.Fatalf("err=%v but stats %+v", err, st)
			}
			if err != nil && !b.TryTake(PriorityPing) {
				t.Fatal("refunded slot not available")
			}
		})
	}
}

func TestConfigDefaultsAndSustainableRate(t *testing.T) {
	b := New(Config{})
	if got := b.SustainableRate(); math.Abs(got-1.5) > 1e-9 {
		t.Errorf("default SustainableRate = %v, want 1.5 (450 per 300 s)", got)
	}
	if got := len(b.Stats().InWindow); got != 2 {
		t.Errorf("default windows: %d", got)
	}
	b = New(Config{Windows: []Window{{100, time.Second}, {0, time.Second}, {5, 0}, {1000, time.Minute}}, Safety: 0.5})
	if got := b.SustainableRate(); math.Abs(got-500.0/60) > 1e-9 {
		t.Errorf("SustainableRate = %v, want 500/60", got)
	}
	if got := len(b.Stats().InWindow); got != 2 {
		t.Errorf("invalid windows kept: %d", got)
	}
	// Safety out of range means the default; tiny limits keep at least 1.
	b = New(Config{Windows: []Window{{1, time.Second}}, Safety: 7})
	if got := b.SustainableRate(); got != 1 {
		t.Errorf("SustainableRate = %v, want 1", got)
	}
	// floor(0.29*100) must be 29 despite float rounding.
	b = New(Config{Windows: []Window{{100, 100 * time.Second}}, Safety: 0.29})
	if got := b.SustainableRate(); math.Abs(got-0.29) > 1e-9 {
		t.Errorf("SustainableRate = %v, want 0.29", got)
	}
	if !math.IsInf(New(Config{Windows: []Window{{0, 0}}}).SustainableRate(), 1) {
		t.Error("no valid window: want +Inf")
	}
	if PriorityPing.String() != "ping" || Priority(9).String() != "priority(9)" {
		t.Error("Priority.String")
	}
}

func TestInjectedNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A clock offset from time.Now (for example a server-corrected clock)
		// works as long as it advances with the timers.
		offset := 90 * time.Minute
		b := New(Config{Windows: []Window{{1, time.Second}}, Safety: 1, Now: func() time.Time { return time.Now().Add(offset) }})
		start := time.Now()
		for range 3 {
			if err := b.Wait(t.Context(), PriorityPing); err != nil {
				t.Fatal(err)
			}
		}
		if d := time.Since(start); d != 2*time.Second {
			t.Errorf("3 sends at 1/s took %v", d)
		}
		b.Observe(Observation{Status: 200, Remaining: 0, Reset: start.Add(offset + 10*time.Second)})
		if err := b.Wait(t.Context(), PriorityPing); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 10*time.Second {
			t.Errorf("Reset in the budget's clock honoured at %v, want 10s", d)
		}
	})
}

func BenchmarkWaitUncontended(b *testing.B) {
	// Limits that never bind, with short periods so the rings stay small:
	// measures the bookkeeping of one Wait.
	bu := New(Config{Windows: []Window{{1 << 30, 10 * time.Millisecond}, {1 << 30, 50 * time.Millisecond}}, Safety: 1})
	ctx := context.Background()
	for b.Loop() {
		if err := bu.Wait(ctx, PriorityPing); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWaitParallel(b *testing.B) {
	bu := New(Config{Windows: []Window{{1 << 30, 10 * time.Millisecond}, {1 << 30, 50 * time.Millisecond}}, Safety: 1})
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := bu.Wait(ctx, PriorityRefresh); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestWindowRing(t *testing.T) {
	// White-box: growth, wrap-around, pruning and removal keep the ring a
	// sorted list of the sends still in the window.
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	w := window{limit: 20, period: 10 * time.Second}
	list := func() []int {
		var out []int
		for i := 0; i < w.n; i++ {
			out = append(out, int(w.at(i).Sub(t0)/time.Second))
		}
		return out
	}
	for s := range 12 { // grows 8 -> 16
		w.push(at(s))
	}
	w.prune(at(15))            // keeps 6..11
	for s := 15; s < 25; s++ { // wraps around
		w.push(at(s))
	}
	if got := fmt.Sprint(list()); got != "[6 7 8 9 10 11 15 16 17 18 19 20 21 22 23 24]" {
		t.Fatalf("ring = %s", got)
	}
	w.remove(at(16))
	w.remove(at(6))
	w.remove(at(99)) // absent: nothing
	if got := fmt.Sprint(list()); got != "[7 8 9 10 11 15 17 18 19 20 21 22 23 24]" {
		t.Fatalf("after remove = %s", got)
	}
	w.prune(at(25))
	if got := fmt.Sprint(list()); got != "[17 18 19 20 21 22 23 24]" || !w.freeAt(at(25)).Equal(at(25)) {
		t.Fatalf("after prune = %s", got)
	}
	w = window{limit: 3, period: 10 * time.Second}
	w.push(at(1))
	w.push(at(2))
	w.push(at(3))
	if len(w.buf) != 3 || !w.freeAt(at(4)).Equal(at(11)) {
		t.Fatalf("full window: cap %d, free at %v", len(w.buf), w.freeAt(at(4)).Sub(t0))
	}
}
