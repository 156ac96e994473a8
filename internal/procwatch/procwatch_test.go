package procwatch

import (
	"context"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestMain doubles as a helper child process: with KGA_HELPER=block it
// blocks reading stdin and exits when stdin closes.
func TestMain(m *testing.M) {
	if os.Getenv("KGA_HELPER") == "block" {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func startHelper(t *testing.T) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "KGA_HELPER=block")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	return cmd, in
}

func TestWatchExit(t *testing.T) {
	cmd, stdin := startHelper(t)
	pid := cmd.Process.Pid
	st, err := StartTime(pid)
	if err != nil || st == 0 {
		t.Fatalf("start time %d %v", st, err)
	}
	if !Alive(pid, st) || !Alive(pid, 0) {
		t.Fatal("live child reported dead")
	}
	if Alive(pid, st+1) {
		t.Fatal("start time mismatch reported as the same process")
	}
	ch, err := WatchExit(t.Context(), pid, st)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("exit reported while the child runs")
	default:
	}
	stdin.Close()
	within(t, ch, "exit notification")
	_ = cmd.Wait()
	if Alive(pid, st) {
		t.Error("reaped child reported alive")
	}
	// Already gone, or a different start time: closed at once.
	gone, err := WatchExit(t.Context(), pid, st)
	if err != nil {
		t.Fatal(err)
	}
	within(t, gone, "exit of a gone process")
}

func TestWatchExitStartTimeMismatch(t *testing.T) {
	ch, err := WatchExit(t.Context(), os.Getpid(), 1)
	if err != nil {
		t.Fatal(err)
	}
	within(t, ch, "mismatched start time")
}

func TestWatchExitCancel(t *testing.T) {
	cmd, _ := startHelper(t)
	ctx, cancel := testContext(t)
	ch, err := WatchExit(ctx, cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-ch:
		t.Fatal("channel closed on cancel")
	default:
	}
}

// within fails the test if ch does not become ready within a generous
// bound; it guards against hangs, it does not time behaviour.
func within[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func testContext(t testing.TB) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx, cancel
}
