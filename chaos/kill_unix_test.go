//go:build unix

package chaos

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/agenttest"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// agentBinary builds cmd/keygen-agent once per test binary run.
func agentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kga-bin")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		builtBin = filepath.Join(dir, "keygen-agent")
		out, err := exec.Command("go", "build", "-o", builtBin, "github.com/keygen-agent/keygen-agent/cmd/keygen-agent").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// realAgent is a `keygen-agent run` process.
type realAgent struct {
	cmd  *exec.Cmd
	logs *agenttest.SyncBuffer
}

func startRealAgent(t *testing.T, bin string, env, args []string) *realAgent {
	t.Helper()
	a := &realAgent{logs: &agenttest.SyncBuffer{}}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Env = env
	a.cmd.Stderr = a.logs
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return a
}

// waitReady polls the socket until license.status answers state.
func waitReady(t *testing.T, sock, state string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := ipc.Dial(ctx, sock)
		if err == nil {
			st, err2 := c.Status(ctx)
			c.Close()
			if err2 == nil && st.State == state {
				cancel()
				return
			}
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("agent on %s not %q within %v (last: %v)", sock, state, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// helperProc is an app instance: this test binary in helper mode.
type helperProc struct {
	mode  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	pid   int
	mu    sync.Mutex
	lines []string
	dead  bool
}

func startHelper(t *testing.T, mode, sock string) *helperProc {
	t.Helper()
	h := &helperProc{mode: mode}
	h.cmd = exec.Command(os.Args[0], "-test.run=^$")
	// GORACE: a -race helper otherwise sleeps 1s at exit.
	h.cmd.Env = append(os.Environ(), "CHAOS_HELPER="+mode, "CHAOS_SOCKET="+sock, "GORACE=atexit_sleep_ms=0")
	h.cmd.Stderr = os.Stderr
	var err error
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.pid = h.cmd.Process.Pid
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.mu.Lock()
			h.lines = append(h.lines, sc.Text())
			h.mu.Unlock()
		}
	}()
	return h
}

// line returns the first output line starting with prefix.
func (h *helperProc) line(prefix string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.lines {
		if strings.HasPrefix(l, prefix) {
			return l, true
		}
	}
	return "", false
}

func (h *helperProc) kill() {
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait() // reaped: no zombie keeps its PID "alive"
	h.dead = true
}

func (h *helperProc) stop() {
	if h.dead {
		return
	}
	h.stdin.Close()
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		h.kill()
	}
	h.dead = true
}

// kill -9 of a real agent process holding 100 leases of 100 real app
// processes, then a restart on the same data directory and socket:
//   - apps that exited while the agent was down: their Keygen processes
//     are killed at once;
//   - live apps using the Go client's Reconnect re-acquire by themselves
//     and are re-adopted (same lease, same Keygen process);
//   - live apps that never reconnect: killed after the adoption window;
//   - the server then holds exactly one process per re-adopted app, and
//     never more than maxProcesses at any time.
func TestKill9AgentWith100Leases(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns 100 processes and a real agent binary")
	}
	const n = 100
	t0 := time.Now()
	bin := agentBinary(t)
	t.Logf("agent binary built in %v", time.Since(t0).Round(time.Millisecond))
	srv, err := devserver.New(devserver.Options{DisableRateLimit: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	limit := n
	// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
	demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions, MaxProcesses: &limit})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kga9")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "a.sock")
	cfgFile := filepath.Join(dir, "agent.toml")
	const cfg = "adoption_window = \"2s\"\n[rate_limit]\nshort_limit = 100000\nlong_limit = 1000000\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"KEYGEN_ACCOUNT="+srv.AccountID(), "KEYGEN_PRODUCT="+demo.Product.ID,
		"KEYGEN_LICENSE_KEY="+demo.License.Key, "KEYGEN_PUBLIC_KEY="+srv.PublicKeyHex(),
		"KEYGEN_API_URL="+srv.URL())
	args := []string{"run", "--config", cfgFile, "--data-dir", filepath.Join(dir, "data"), "--socket", sock, "--log-level", "debug"}

	// The invariant monitor: most processes ever seen on the server.
	var maxMu sync.Mutex
	maxSeen := 0
	stopMon := make(chan struct{})
	monDone := make(chan struct{})
	go func() {
		defer close(monDone)
		for {
			per := map[string]int{}
			for _, p := range srv.Processes() {
				per[p.MachineID]++
			}
			maxMu.Lock()
			for _, c := range per {
				maxSeen = max(maxSeen, c)
			}
			maxMu.Unlock()
			select {
			case <-stopMon:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	a1 := startRealAgent(t, bin, env, args)
	waitReady(t, sock, "active", 20*time.Second)

	helpers := make([]*helperProc, n)
	for i := range helpers {
		mode := "reconnect"
		if i%4 == 0 {
			mode = "plain"
		}
		helpers[i] = startHelper(t, mode, sock)
	}
	defer func() {
		var wg sync.WaitGroup
		for _, h := range helpers {
			wg.Go(h.stop)
		}
		wg.Wait()
	}()
	waitUntil(t, "every helper acquired", 30*time.Second, func() error {
		for _, h := range helpers {
			if l, ok := h.line("ERROR"); ok {
				return fmt.Errorf("helper %d: %s", h.pid, l)
			}
			if _, ok := h.line("ACQUIRED"); !ok {
				return fmt.Errorf("helper %d has not acquired", h.pid)
			}
		}
		return nil
	})
	t.Logf("%d helpers acquired after %v", n, time.Since(t0).Round(time.Millisecond))
	if got := len(srv.Processes()); got != n {
		t.Fatalf("server processes = %d, want %d", got, n)
	}
	before := map[int]string{} // pid -> Keygen process id
	for _, h := range helpers {
		l, _ := h.line("ACQUIRED")
		f := strings.Fields(l)
		before[h.pid] = f[3]
	}

	// kill -9 the agent; while it is down a quarter of the apps die too.
	if err := a1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = a1.cmd.Wait()
	var survivors []*helperProc
	for i, h := range helpers {
		switch {
		case i%4 == 1:
			h.kill()
		case h.mode == "reconnect":
			survivors = append(survivors, h)
		}
	}
	if got := len(srv.Processes()); got != n {
		t.Fatalf("after kill -9 the server holds %d processes, want %d (nothing was killed)", got, n)
	}

	restarted := time.Now()
	a2 := startRealAgent(t, bin, env, args)
	defer func() {
		_ = a2.cmd.Process.Signal(syscall.SIGTERM)
		_ = a2.cmd.Wait()
		if t.Failed() {
			t.Logf("restarted agent log (tail):\n%s", a2.logs.Tail(30))
		}
	}()
	waitUntil(t, "settled after the restart", 20*time.Second, func() error {
		if time.Since(restarted) < 2*time.Second {
			return fmt.Errorf("adoption window (2s) not over")
		}
		var want, got []int
		for _, h := range survivors {
			l, ok := h.line("RECONNECTED")
			if !ok {
				return fmt.Errorf("helper %d has not reconnected", h.pid)
			}
			f := strings.Fields(l)
			if f[3] != before[h.pid] || f[4] != "reused=true" {
				h.mu.Lock()
				all := strings.Join(h.lines, " | ")
				h.mu.Unlock()
				return fmt.Errorf("helper %d not re-adopted (had process %s): %s", h.pid, before[h.pid], all)
			}
			want = append(want, h.pid)
		}
		for _, p := range srv.Processes() {
			if p.Status != "ALIVE" {
				return fmt.Errorf("process %s is %s", p.ID, p.Status)
			}
			pid, _ := strconv.Atoi(strings.SplitN(p.PID, "@", 2)[0])
			got = append(got, pid)
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(want, got) {
			return fmt.Errorf("server holds processes of %d apps, want the %d live re-adopted ones", len(got), len(want))
		}
		return nil
	})
	for _, h := range survivors {
		if l, ok := h.line("REVOKED"); ok {
			t.Errorf("live app %d lost its lease: %s", h.pid, l)
		}
	}
	close(stopMon)
	<-monDone
	if maxSeen > limit {
		t.Errorf("the server held %d processes at once; maxProcesses is %d", maxSeen, limit)
	}
	if strings.Contains(a2.logs.String(), "panic") {
		t.Errorf("the restarted agent panicked:\n%s", a2.logs.Tail(30))
	}
	t.Logf("%d apps: %d re-adopted, %d dead while down, %d never reconnected; settled %v after restart",
		n, len(survivors), n/4, n/4, time.Since(restarted).Round(10*time.Millisecond))
}

// waitUntil polls cond (real time) until it returns nil.
func waitUntil(t *testing.T, what string, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
