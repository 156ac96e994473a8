//go:build unix

package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/chaos"
	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// TestScaleReport is the scale part of `go run ./bench`: it holds 100 and
// 1,000 leases over several heartbeat windows of fake time (synctest)
// against a devserver enforcing Keygen Cloud's default rate limits, and
// prints SCALEROW / SCALENOTE lines for the report. It only runs when
// BENCH_SCALE is set (it is a measurement, not a test of speed).
func TestScaleReport(t *testing.T) {
	if os.Getenv("BENCH_SCALE") == "" {
		t.Skip("run by `go run ./bench` (set BENCH_SCALE=1)")
	}
	windows := 3
	if os.Getenv("BENCH_SCALE_FULL") != "" {
		windows = 8
	}
	fmt.Printf("SCALENOTE The agent runs as a library (`agent.New` + `ipc.Server`) in a `testing/synctest` bubble with the dev server\n")
	fmt.Printf("SCALENOTE in memory and Keygen Cloud's default rate limits (60 per 30 s, 500 per 5 min) enforced; every app is its own\n")
	fmt.Printf("SCALENOTE connection with a distinct synthetic peer (`ipc.ServerConfig.PeerFunc`) reported alive by a fake process watcher.\n")
	fmt.Printf("SCALENOTE Time is fake, so %d windows of 600 s or 3600 s take seconds; memory, goroutines and CPU are real and cover the whole\n", windows)
	fmt.Printf("SCALENOTE process (agent + dev server + the clients' connections). CPU s / window is getrusage user+sys over the hold phase\n")
	fmt.Printf("SCALENOTE divided by the windows. The 1,000 row uses heartbeatDuration 3600 s: at Keygen's default 600 s, pings at half the\n")
	fmt.Printf("SCALENOTE interval within 80%% of the budget's sustainable 1.5 req/s (90%% of 500 per 5 min) keep at most 360 leases alive.\n")
	fmt.Printf("SCALENOTE Process deaths: a held lease's process seen not ALIVE, or gone after its heartbeat ran out (culled), on the dev server\n")
	fmt.Printf("SCALENOTE (sampled every 30 s of the hold phase). Gaps: a held lease's process absent from one sample although its heartbeat\n")
	fmt.Printf("SCALENOTE had not run out (the process was killed and re-created by the agent).\n")
	for _, c := range []struct{ n, hb int }{{100, 600}, {1000, 3600}} {
		t.Run(strconv.Itoa(c.n), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { scaleRow(t, c.n, c.hb, windows) })
		})
	}
	t.Run("capacity", func(t *testing.T) { synctest.Test(t, capacityNote) })
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss is VmRSS from /proc (Linux); elsewhere the peak RSS from getrusage.
func rss() string {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
				return fmt.Sprintf("%.0f MiB", float64(kb)/1024)
			}
		}
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return fmt.Sprintf("%d (max)", ru.Maxrss)
}

func scaleRow(t *testing.T, n, hb, windows int) {
	e, err := chaos.NewEnv(chaos.Options{Policy: devserver.PolicySpec{MaxProcesses: &n, HeartbeatDuration: &hb}, DiscardLogs: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	clients := make([]*agenttest.Client, n)
	leases := make([]string, n)
	start := time.Now()
	errs := make(chan error, n)
	for i := range n {
		c, err := e.Dial()
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = c
		go func() {
			r, code, err := c.Acquire(chaos.AppParams())
			if err == nil {
				leases[i] = r.LeaseID
			} else {
				err = fmt.Errorf("%s: %v", code, err)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("acquire: %v", err)
		}
	}
	// Spawns beyond the request budget are granted at once and placed on
	// Keygen from the outbox as the budget allows.
	onServer := func() map[string]devserver.ProcessState {
		out := map[string]devserver.ProcessState{}
		for _, p := range e.Srv.Processes() {
			id, _ := p.Metadata["leaseId"].(string)
			out[id] = p
		}
		return out
	}
	for len(onServer()) < n {
		if time.Since(start) > 6*time.Hour {
			t.Fatalf("after 6h only %d of %d leases are on the server", len(onServer()), n)
		}
		time.Sleep(30 * time.Second)
	}
	placed := time.Since(start)
	runtime.GC()
	st0, cpu0 := e.Srv.Stats(), cpuTime()
	deaths, gaps := 0, 0
	lastHB := map[string]time.Time{}
	for id, p := range onServer() {
		lastHB[id] = p.LastHeartbeat
	}
	var per30 []int
	last := st0.Total
	window := time.Duration(hb) * time.Second
	for range int(time.Duration(windows) * window / (30 * time.Second)) {
		time.Sleep(30 * time.Second)
		st := e.Srv.Stats()
		per30 = append(per30, st.Total-last)
		last = st.Total
		seen := onServer()
		for _, id := range leases {
			p, ok := seen[id]
			switch {
			case ok && p.Status == "ALIVE":
				lastHB[id] = p.LastHeartbeat
			case !ok && time.Since(lastHB[id]) < window:
				// Gone although its heartbeat had not run out: killed and
				// re-created by the agent, not culled.
				gaps++
				t.Logf("at +%v: lease %s has no process on the server (last ping %v ago)", time.Since(start).Round(time.Second), id, time.Since(lastHB[id]).Round(time.Second))
			default:
				deaths++
				t.Logf("at +%v: lease %s on the server: %q", time.Since(start).Round(time.Second), id, p.Status)
			}
		}
	}
	cpu := cpuTime() - cpu0
	st1 := e.Srv.Stats()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	peak30, peak5m := 0, 0
	for i := range per30 {
		peak30 = max(peak30, per30[i])
		sum := 0
		for j := i; j < min(i+10, len(per30)); j++ {
			sum += per30[j]
		}
		peak5m = max(peak5m, sum)
	}
	reqPerWindow := float64(st1.Total-st0.Total) / float64(windows)
	budget := min(60*hb/30, 500*hb/300)
	status, _ := e.StatusDirect()
	fmt.Printf("SCALEROW | %d | %d s | %v | %d | %.1f / %.1f MiB | %s | %d | %.3f | %.0f (%d) | %d / %d | %d | %d (%d gaps) |\n",
		n, hb, placed.Round(time.Second), windows, float64(ms.HeapInuse)/(1<<20), float64(ms.Sys)/(1<<20), rss(), runtime.NumGoroutine(),
		cpu.Seconds()/float64(windows), reqPerWindow, budget, peak30, peak5m, st1.RateLimited-st0.RateLimited, deaths, gaps)
	if deaths != 0 {
		t.Errorf("%d process deaths", deaths)
	}
	if status == nil || status.Leases.Active != n {
		t.Errorf("agent status: %+v", status)
	}
	for _, c := range clients {
		c.Close()
	}
}

// capacityNote pushes past the agent's heartbeat capacity with a small
// request budget and reports what the next acquire gets.
func capacityNote(t *testing.T) {
	n := 1000
	e, err := chaos.NewEnv(chaos.Options{Policy: devserver.PolicySpec{MaxProcesses: &n},
		Config: agent.Config{RateLimit: agent.RateLimitConfig{PerShort: 6, PerLong: 50}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	st, err := e.StatusDirect()
	if err != nil {
		t.Fatal(err)
	}
	capacity := st.Leases.Capacity
	var held []*agenttest.Client
	for range capacity {
		c, _ := e.Dial()
		if _, code, err := c.Acquire(chaos.AppParams()); err != nil {
			t.Fatalf("acquire within capacity: %s %v", code, err)
		}
		held = append(held, c)
	}
	c, _ := e.Dial()
	_, code, err := c.Acquire(chaos.AppParams())
	if code != ipc.CodeHeartbeatCapacity {
		t.Errorf("acquire past capacity: %s %v", code, err)
	}
	time.Sleep(30 * time.Minute)
	total, notAlive := e.ServerProcesses()
	fmt.Printf("SCALENOTE\nSCALENOTE Past capacity: with the agent's budget cut to 6 req / 30 s and 50 req / 5 min (capacity %d leases at 600 s), lease %d is refused\n", capacity, capacity+1)
	fmt.Printf("SCALENOTE with `HEARTBEAT_CAPACITY_EXCEEDED` (%q) instead of being granted and left to die; the %d held leases\n", err, capacity)
	fmt.Printf("SCALENOTE stay alive (after 30 min: %d processes on the server, %d not ALIVE).\n", total, notAlive)
	c.Close()
	for _, h := range held {
		h.Close()
	}
}
