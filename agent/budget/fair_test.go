package budget

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// One user with many queued requests must not starve another user or the
// agent's own revalidations: owners take turns, pings still go first.
func TestOwnersTakeTurns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Windows: []Window{{Limit: 1, Period: time.Second}}, Safety: 1})
		if err := b.Wait(t.Context(), PriorityRefresh); err != nil { // fill the window
			t.Fatal(err)
		}
		var mu sync.Mutex
		var order []string
		start := func(owner string, p Priority) {
			go func() {
				if err := b.WaitAs(context.Background(), p, owner); err != nil {
					t.Error(err)
				}
				mu.Lock()
				order = append(order, owner+"/"+p.String())
				mu.Unlock()
			}()
			synctest.Wait() // arrival order is the start order
		}
		for range 20 {
			start("1000", PrioritySpawn) // a user looping acquires
		}
		start("1001", PrioritySpawn) // a real app
		start("", PriorityRefresh)   // the agent's revalidation
		start("1000", PriorityKill)  // more from the flooder
		start("", PriorityPing)      // a heartbeat
		time.Sleep(30 * time.Second)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(order) != 24 {
			t.Fatalf("%d granted, want 24", len(order))
		}
		pos := func(s string) int {
			for i, o := range order {
				if o == s {
					return i
				}
			}
			return -1
		}
		if p := pos("/ping"); p != 0 {
			t.Errorf("ping granted at %d, want first: %v", p, order)
		}
		if p := pos("1001/spawn"); p < 0 || p > 3 {
			t.Errorf("the other user's spawn granted at %d of 24, want within the first 3 (after the ping and one of the flooder's): %v", p, order)
		}
		if p := pos("/refresh"); p < 0 || p > 3 {
			t.Errorf("the agent's refresh granted at %d of 24, want within the first 3: %v", p, order)
		}
	})
}

// A user's own waiters keep their priority order and stay first come,
// first served.
func TestOwnerKeepsPriorityOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Windows: []Window{{Limit: 1, Period: time.Second}}, Safety: 1})
		_ = b.Wait(t.Context(), PriorityRefresh)
		var mu sync.Mutex
		var order []Priority
		for _, p := range []Priority{PriorityRefresh, PriorityKill, PrioritySpawn} {
			go func() {
				_ = b.WaitAs(context.Background(), p, "1000")
				mu.Lock()
				order = append(order, p)
				mu.Unlock()
			}()
			synctest.Wait()
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		want := []Priority{PrioritySpawn, PriorityKill, PriorityRefresh}
		for i := range want {
			if i >= len(order) || order[i] != want[i] {
				t.Fatalf("order %v, want %v", order, want)
			}
		}
		if s := b.Stats(); s.Waiting != 0 {
			t.Fatalf("waiting %d", s.Waiting)
		}
	})
}

// One user may use only its share of each window, so a user who exhausted
// it leaves room for another user and for the agent, even when no one else
// was waiting while it spent.
func TestOwnerShareOfWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Windows: []Window{{Limit: 10, Period: time.Minute}}, Safety: 1, OwnerShare: 0.5})
		var mu sync.Mutex
		granted := map[string]int{}
		for range 20 {
			go func() {
				if b.WaitAs(t.Context(), PrioritySpawn, "1000") == nil {
					mu.Lock()
					granted["1000"]++
					mu.Unlock()
				}
			}()
		}
		synctest.Wait()
		mu.Lock()
		if granted["1000"] != 5 {
			t.Fatalf("the user got %d of a 10-request window, want its share of 5", granted["1000"])
		}
		mu.Unlock()
		// Another user and the agent still get in at once.
		for _, o := range []string{"1001", ""} {
			start := time.Now()
			if err := b.WaitAs(t.Context(), PrioritySpawn, o); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d != 0 {
				t.Fatalf("owner %q waited %v behind a user over its share", o, d)
			}
		}
		// The flooder resumes as its own sends leave the window.
		time.Sleep(time.Minute)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if granted["1000"] != 10 {
			t.Fatalf("after one period the user has %d, want 10", granted["1000"])
		}
	})
}
