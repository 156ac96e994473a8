package agent

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// A timer's jitter depends on the agent's salt, the timer and the instant,
// not on the order in which the agent's goroutines draw: two agents with
// one seed that draw for the same timers in opposite orders get the same
// values (issue 14: a model seed replays the same timers). Other salts,
// timers and instants draw other values, spread over [0, 1).
func TestTimerJitterIndependentOfDrawOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := newEnv(t, envOptions{}).cfg
		newA := func(seed float64) *Agent {
			a, err := New(cfg, Deps{Rand: func() float64 { return seed }})
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		a, b, other := newA(0.25), newA(0.25), newA(0.75)
		keys := make([]string, 200)
		for i := range keys {
			keys[i] = fmt.Sprintf("ping/lease_%03d", i)
		}
		got := map[string]float64{}
		sum := 0.0
		for _, k := range keys {
			got[k] = a.draw(k)()
			sum += got[k]
			if got[k] < 0 || got[k] >= 1 {
				t.Fatalf("draw %s = %v, outside [0, 1)", k, got[k])
			}
		}
		if mean := sum / float64(len(keys)); mean < 0.4 || mean > 0.6 {
			t.Errorf("mean draw %v over %d timers, want about 0.5", mean, len(keys))
		}
		same := 0
		for i := len(keys) - 1; i >= 0; i-- {
			k := keys[i]
			if v := b.draw(k)(); v != got[k] {
				t.Errorf("%s: %v drawn in reverse order, %v in order", k, v, got[k])
			}
			if other.draw(k)() == got[k] {
				same++
			}
		}
		if same > 0 {
			t.Errorf("%d of %d draws equal under another salt", same, len(keys))
		}
		v := a.draw(keys[0])()
		time.Sleep(time.Second)
		if a.draw(keys[0])() == v {
			t.Errorf("%s drew %v at two instants", keys[0], v)
		}
	})
}
