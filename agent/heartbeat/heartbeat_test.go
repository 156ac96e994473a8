package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestThousandKeysFireOnSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const keys = 1000
		start := time.Now()
		interval := func(i int) time.Duration { return time.Duration(10+i%111) * time.Second }
		var mu sync.Mutex
		counts := make(map[string]int)
		late := 0
		var s *Scheduler[string]
		s = New(Config{}, func(ctx context.Context, key string) {
			i, _ := strconv.Atoi(key)
			mu.Lock()
			counts[key]++
			n := counts[key]
			mu.Unlock()
			due := start.Add(time.Duration(n) * interval(i))
			if now := time.Now(); !now.Equal(due) {
				mu.Lock()
				late++
				mu.Unlock()
			}
			s.Set(key, due.Add(interval(i)))
		})
		for i := range keys {
			s.Set(strconv.Itoa(i), start.Add(interval(i)))
		}
		if s.Len() != keys {
			t.Fatalf("Len = %d", s.Len())
		}
		const span = 10*time.Minute + 500*time.Millisecond
		ctx, cancel := context.WithTimeout(t.Context(), span)
		defer cancel()
		if err := s.Run(ctx); err != nil {
			t.Fatal(err)
		}
		total := 0
		for i := range keys {
			want := int(span / interval(i))
			if got := counts[strconv.Itoa(i)]; got != want {
				t.Errorf("key %d (every %v) fired %d times, want %d", i, interval(i), got, want)
			}
			total += want
		}
		if late != 0 {
			t.Errorf("%d firings not at their due time", late)
		}
		if s.Len() != keys {
			t.Errorf("Len after run = %d, want %d", s.Len(), keys)
		}
		t.Logf("%d firings of %d keys in %v of fake time", total, keys, span)
	})
}

func TestConcurrencyBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var inflight, maxInflight, fired atomic.Int32
		s := New(Config{Concurrency: 8}, func(ctx context.Context, key string) {
			n := inflight.Add(1)
			for {
				m := maxInflight.Load()
				if n <= m || maxInflight.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Second)
			inflight.Add(-1)
			fired.Add(1)
		})
		start := time.Now()
		for i := range 100 {
			s.Set(fmt.Sprint("k", i), start)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()
		// 100 one-second firings, 8 at a time: 13 rounds.
		time.Sleep(12*time.Second + time.Millisecond)
		synctest.Wait()
		if got := fired.Load(); got != 96 {
			t.Errorf("fired %d after 12 s, want 96", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := fired.Load(); got != 100 {
			t.Errorf("fired %d after 13 s, want 100", got)
		}
		if got := maxInflight.Load(); got != 8 {
			t.Errorf("max in flight %d, want 8", got)
		}
		if s.Len() != 0 {
			t.Errorf("Len = %d after one-shot firings", s.Len())
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestRemoveAndSetMove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var mu sync.Mutex
		fired := map[string][]time.Duration{}
		var s *Scheduler[string]
		s = New(Config{}, func(ctx context.Context, key string) {
			mu.Lock()
			fired[key] = append(fired[key], time.Since(start))
			mu.Unlock()
			s.Set(key, time.Now().Add(10*time.Second))
		})
		s.Set("a", start.Add(10*time.Second))
		s.Set("b", start.Add(10*time.Second))
		s.Set("c", start.Add(10*time.Second))
		s.Remove("nope") // unknown: nothing
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()

		time.Sleep(25 * time.Second) // a, b, c fired at 10 s and 20 s
		s.Remove("b")
		s.Remove("b")
		if _, ok := s.Due("b"); ok {
			t.Error("Due(b) after Remove")
		}
		s.Set("c", start.Add(26*time.Second)) // moved earlier than 30 s
		if d, ok := s.Due("c"); !ok || !d.Equal(start.Add(26*time.Second)) {
			t.Errorf("Due(c) = %v, %v", d, ok)
		}
		if d, ok := s.Due("a"); !ok || !d.Equal(start.Add(30*time.Second)) {
			t.Errorf("Due(a) = %v, %v", d, ok)
		}
		if s.Len() != 2 {
			t.Errorf("Len = %d, want 2", s.Len())
		}
		time.Sleep(20 * time.Second) // to 45 s
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		want := map[string][]time.Duration{
			"a": {10 * time.Second, 20 * time.Second, 30 * time.Second, 40 * time.Second},
			"b": {10 * time.Second, 20 * time.Second},
			"c": {10 * time.Second, 20 * time.Second, 26 * time.Second, 36 * time.Second},
		}
		for k, w := range want {
			if fmt.Sprint(fired[k]) != fmt.Sprint(w) {
				t.Errorf("%s fired at %v, want %v", k, fired[k], w)
			}
		}
	})
}

func TestSetAndRemoveWhileFiring(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var calls atomic.Int32
		var inflight, overlap atomic.Int32
		release := make(chan struct{})
		s := New(Config{Concurrency: 4}, func(ctx context.Context, key string) {
			if inflight.Add(1) > 1 {
				overlap.Add(1)
			}
			calls.Add(1)
			<-release
			inflight.Add(-1)
		})
		s.Set("k", start)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()
		synctest.Wait()
		if calls.Load() != 1 {
			t.Fatalf("calls = %d", calls.Load())
		}
		if _, ok := s.Due("k"); ok || s.Len() != 0 {
			t.Error("firing key without a new Set should not be scheduled")
		}
		// Set while firing: not fired concurrently even though it is due.
		s.Set("k", start)
		if d, ok := s.Due("k"); !ok || !d.Equal(start) || s.Len() != 1 {
			t.Errorf("Due while firing = %v, %v; Len %d", d, ok, s.Len())
		}
		synctest.Wait()
		if calls.Load() != 1 {
			t.Fatal("key fired again while firing")
		}
		// Remove then Set again while firing: the last word wins.
		s.Remove("k")
		if _, ok := s.Due("k"); ok || s.Len() != 0 {
			t.Error("Remove while firing did not unschedule")
		}
		s.Set("k", start.Add(5*time.Second))
		release <- struct{}{} // first firing returns at 0 s
		synctest.Wait()
		if calls.Load() != 1 {
			t.Fatal("fired before its due time")
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if calls.Load() != 2 {
			t.Fatalf("calls = %d after the pending Set came due", calls.Load())
		}
		// Remove while firing: not fired again.
		s.Remove("k")
		release <- struct{}{}
		time.Sleep(time.Minute)
		if calls.Load() != 2 || s.Len() != 0 || overlap.Load() != 0 {
			t.Errorf("calls %d, Len %d, overlap %d", calls.Load(), s.Len(), overlap.Load())
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestRunReturnsAfterInflightWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var finished atomic.Bool
		s := New(Config{}, func(ctx context.Context, key string) {
			<-ctx.Done()
			time.Sleep(3 * time.Second) // cleanup after cancel
			finished.Store(true)
		})
		s.Set("x", time.Now())
		s.Set("later", time.Now().Add(time.Hour))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()
		synctest.Wait()
		if err := s.Run(ctx); !errors.Is(err, ErrRunning) {
			t.Errorf("second Run = %v, want ErrRunning", err)
		}
		start := time.Now()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !finished.Load() || time.Since(start) != 3*time.Second {
			t.Errorf("Run returned after %v, in-flight finished %v", time.Since(start), finished.Load())
		}
		// Keys survive the run, and Run may be called again.
		if d, ok := s.Due("later"); !ok || s.Len() != 1 {
			t.Errorf("Due(later) = %v, %v; Len %d", d, ok, s.Len())
		}
		ctx2, cancel2 := context.WithTimeout(t.Context(), time.Second)
		defer cancel2()
		if err := s.Run(ctx2); err != nil {
			t.Fatal(err)
		}
		// Run with a context already done returns at once.
		if err := s.Run(ctx2); err != nil {
			t.Fatal(err)
		}
	})
}

func TestNextPing(t *testing.T) {
	last := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	iv := 600 * time.Second
	cases := []struct {
		fraction, jitter, r float64
		want                time.Duration
	}{
		{0.5, 0, 0.9, 300 * time.Second},
		{0.5, 0.2, 0, 240 * time.Second},
		{0.5, 0.2, 0.5, 300 * time.Second},
		{0.5, 0.2, 1, 360 * time.Second},
		{0.75, 0.5, 1, 480 * time.Second}, // capped at 0.8
		{0.9, 0, 0, 480 * time.Second},    // fraction capped at 0.8
		{0, 0, 0, 300 * time.Second},      // default fraction
		{math.NaN(), 0, 0, 300 * time.Second},
		{0.5, 5, 0, 0},                    // jitter capped at 1: never before last
		{0.5, 0.2, -3, 240 * time.Second}, // bad rnd clamped
	}
	for _, c := range cases {
		got := NextPing(last, iv, c.fraction, c.jitter, func() float64 { return c.r }).Sub(last)
		if got != c.want {
			t.Errorf("NextPing(f=%v, j=%v, r=%v) = %v, want %v", c.fraction, c.jitter, c.r, got, c.want)
		}
	}
	if got := NextPing(last, 0, 0.5, 0.1, nil); !got.Equal(last) {
		t.Errorf("zero interval: %v", got)
	}
	for range 1000 {
		d := NextPing(last, iv, 0.5, 0.2, nil).Sub(last)
		if d < 240*time.Second || d > 360*time.Second {
			t.Fatalf("default rnd out of range: %v", d)
		}
	}
}

func TestCapacity(t *testing.T) {
	// 1.5 req/s (the default budget), 600 s interval, ping at half of it:
	// each lease costs 1/300 req/s.
	if got := Capacity(1.5, 600*time.Second, 0.5); got != 450 {
		t.Errorf("Capacity = %d, want 450", got)
	}
	if got := Capacity(1.5, time.Hour, 0.5); got != 2700 {
		t.Errorf("Capacity = %d, want 2700", got)
	}
	if Capacity(0, time.Hour, 0.5) != 0 || Capacity(1, 0, 0.5) != 0 || Capacity(math.NaN(), time.Hour, 0.5) != 0 {
		t.Error("degenerate inputs")
	}
	if Capacity(math.Inf(1), time.Hour, 0.5) != math.MaxInt32 {
		t.Error("infinite rate")
	}
}

func BenchmarkSet10k(b *testing.B) {
	s := New(Config{}, func(context.Context, string) {})
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = strconv.Itoa(i)
	}
	base := time.Now().Add(time.Hour)
	for i, k := range keys {
		s.Set(k, base.Add(time.Duration(i)*time.Millisecond))
	}
	i := 0
	for b.Loop() {
		s.Set(keys[i%len(keys)], base.Add(time.Duration(i*7919%10000)*time.Millisecond))
		i++
	}
}

func BenchmarkFire10k(b *testing.B) {
	// Each op: schedule 10k due keys and fire them all on 8 workers, each
	// firing rescheduling nothing.
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = strconv.Itoa(i)
	}
	for b.Loop() {
		var wg sync.WaitGroup
		wg.Add(len(keys))
		s := New(Config{}, func(context.Context, string) { wg.Done() })
		now := time.Now()
		for _, k := range keys {
			s.Set(k, now)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		wg.Wait()
		cancel()
		<-done
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(keys)), "ns/fire")
}

// Keys are any comparable type: two keys that differ only in one field are
// distinct entries, and each fires with its own value.
func TestStructKeys(t *testing.T) {
	type key struct {
		kind int
		id   string
	}
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var fired []key
		s := New(Config{}, func(_ context.Context, k key) {
			mu.Lock()
			fired = append(fired, k)
			mu.Unlock()
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(ctx) }()
		now := time.Now()
		s.Set(key{1, "a"}, now.Add(2*time.Second))
		s.Set(key{2, "a"}, now.Add(time.Second))
		s.Set(key{1, "b"}, now.Add(3*time.Second))
		s.Remove(key{1, "b"})
		if s.Len() != 2 {
			t.Fatalf("Len = %d, want 2", s.Len())
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if len(fired) != 2 || fired[0] != (key{2, "a"}) || fired[1] != (key{1, "a"}) {
			t.Fatalf("fired %v", fired)
		}
	})
}
