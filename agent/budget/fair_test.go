package budget

import (
	"context"
	"fmt"
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
// was waiting while it spent. Its share is half of what the agent's
// reserve leaves: (10-2)/2.
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
		if granted["1000"] != 4 {
			t.Fatalf("the user got %d of a 10-request window, want its share of 4", granted["1000"])
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
		if granted["1000"] != 8 {
			t.Fatalf("after one period the user has %d, want 8", granted["1000"])
		}
	})
}

// The attack suite's request-budget row (issue 15 defect 3), replayed on
// the fake clock with its figures: a 40-per-30 s limit at the default
// safety (36 usable), 8 requests for the agent's start-up, a good user's
// two quiet acquires (spawn + kill each), then 12 attacker loops of
// acquire/release with the kills charged to the attacker. The attacker
// may take only half of what the agent leaves, (36-8)/2 = 14, so the good
// user's next four acquires and then the agent's own ping and
// revalidation all go through at once. With a fixed half of the window
// per user (18), the attacker, the agent and the good user together
// filled the window and the good user's fourth spawn waited out its 10 s.
func TestAttackerLoopLeavesOthersTheirShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Windows: []Window{{Limit: 40, Period: 30 * time.Second}, {Limit: 300, Period: 5 * time.Minute}}})
		const good, attacker = "uid:0", "uid:65534"
		prompt := func(what string, p Priority, owner string) {
			t.Helper()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			start := time.Now()
			if err := b.WaitAs(ctx, p, owner); err != nil {
				t.Fatalf("%s: %v after %v (in window %v)", what, err, time.Since(start), b.Stats().InWindow)
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("%s waited %v", what, d)
			}
		}
		for i := range 8 {
			prompt(fmt.Sprintf("agent start-up request %d", i), PriorityRefresh, "")
		}
		for i := range 2 {
			prompt(fmt.Sprintf("good quiet spawn %d", i), PrioritySpawn, good)
			prompt(fmt.Sprintf("good quiet kill %d", i), PriorityKill, good)
		}

		stop, cancelAttack := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		var mu sync.Mutex
		attacks := 0
		take := func(p Priority, d time.Duration) bool {
			ctx, cancel := context.WithTimeout(stop, d)
			defer cancel()
			if b.WaitAs(ctx, p, attacker) != nil {
				return false
			}
			mu.Lock()
			attacks++
			mu.Unlock()
			return true
		}
		for range 12 {
			wg.Go(func() {
				for stop.Err() == nil {
					if take(PrioritySpawn, 10*time.Second) { // else granted offline
						take(PriorityKill, 30*time.Second)
					}
				}
			})
		}
		time.Sleep(2 * time.Second)
		mu.Lock()
		if attacks != 14 {
			t.Errorf("the attacker got %d requests, want 14: half of the 28 the agent's start-up left", attacks)
		}
		mu.Unlock()
		for i := range 4 {
			prompt(fmt.Sprintf("good spawn %d under attack", i), PrioritySpawn, good)
			prompt(fmt.Sprintf("good kill %d under attack", i), PriorityKill, good)
			time.Sleep(time.Second)
		}
		prompt("the agent's ping", PriorityPing, "")
		prompt("the agent's revalidation", PriorityRefresh, "")
		cancelAttack()
		wg.Wait()
	})
}

// However many users ask, together they never take the agent's reserve:
// its pings and revalidations go through at once.
func TestUsersLeaveTheAgentReserve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Windows: []Window{{Limit: 10, Period: time.Minute}}, Safety: 1})
		var mu sync.Mutex
		users := 0
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for u := range 10 {
			for range 5 {
				wg.Go(func() {
					if b.WaitAs(ctx, PrioritySpawn, fmt.Sprint("uid:", 1000+u)) == nil {
						mu.Lock()
						users++
						mu.Unlock()
					}
				})
			}
		}
		synctest.Wait()
		mu.Lock()
		if users != 8 {
			t.Errorf("the users got %d of a 10-request window, want 8: all but the agent's reserve of 2", users)
		}
		mu.Unlock()
		for _, p := range []Priority{PriorityPing, PriorityRefresh} {
			start := time.Now()
			if err := b.Wait(t.Context(), p); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d != 0 {
				t.Errorf("the agent's %v waited %v", p, d)
			}
		}
		if s := b.Stats(); s.InWindow[0] != 10 {
			t.Errorf("in window %v, want 10", s.InWindow)
		}
		cancel()
		wg.Wait()
	})
}

// WaitWithinShare answers ErrShareSpent at once, recording nothing, when
// the owner's share is used; it waits for the global windows like WaitAs;
// the agent never gets ErrShareSpent.
func TestWaitWithinShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Config{Windows: []Window{{Limit: 10, Period: time.Minute}}, Safety: 1, OwnerShare: 0.5, AgentReserve: 0.2})
		// Users' pool 8, one user at most 4.
		for i := range 4 {
			if err := b.WaitWithinShare(t.Context(), PriorityKill, "666"); err != nil {
				t.Fatalf("request %d within the share: %v", i, err)
			}
		}
		start := time.Now()
		if err := b.WaitWithinShare(t.Context(), PriorityKill, "666"); err != ErrShareSpent {
			t.Fatalf("fifth request: %v, want ErrShareSpent", err)
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("ErrShareSpent after %v, want at once", d)
		}
		if s := b.Stats(); s.Sent != 4 || s.InWindow[0] != 4 {
			t.Fatalf("stats %+v: the refused request was recorded", s)
		}
		// Another user and the agent are not refused.
		if err := b.WaitWithinShare(t.Context(), PriorityKill, "1000"); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if err := b.WaitWithinShare(t.Context(), PriorityKill, ""); err != nil {
				t.Fatal(err)
			}
		}
		// The window is full (10): the agent waits for it, not refused.
		start = time.Now()
		if err := b.WaitWithinShare(t.Context(), PriorityKill, ""); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != time.Minute {
			t.Fatalf("the agent waited %v for the full window, want 1m", d)
		}
	})
}
