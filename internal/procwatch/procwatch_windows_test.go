package procwatch

import (
	"testing"

	"golang.org/x/sys/windows"
)

// TestWatchExitManyShareBatches watches one child through 70 watches (more
// than one batch of 63): all fire when it exits, and the batch goroutines
// end afterwards.
func TestWatchExitManyShareBatches(t *testing.T) {
	cmd, stdin := startHelper(t)
	pid := cmd.Process.Pid
	st, err := StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	var chs []<-chan struct{}
	for range 70 {
		ch, err := WatchExit(t.Context(), pid, st)
		if err != nil {
			t.Fatal(err)
		}
		chs = append(chs, ch)
	}
	if n := exits.batchCount(); n != 2 {
		t.Errorf("%d batches for 70 watches, want 2", n)
	}
	stdin.Close()
	for _, ch := range chs {
		within(t, ch, "exit notification")
	}
}

// TestPinnedHandleOutlivesPID: with a pinned handle, Alive and WatchExit
// use it (not the PID) and see the exit.
func TestPinnedHandle(t *testing.T) {
	cmd, stdin := startHelper(t)
	pid := cmd.Process.Pid
	h, err := windows.OpenProcess(windows.SYNCHRONIZE|windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		t.Fatal(err)
	}
	st, err := HandleStartTime(h)
	if err != nil {
		t.Fatal(err)
	}
	unpin := Pin(pid, st, h)
	defer unpin()
	if !Alive(pid, st) {
		t.Fatal("pinned live process reported dead")
	}
	ch, err := WatchExit(t.Context(), pid, st)
	if err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	within(t, ch, "exit of a pinned process")
	_ = cmd.Wait()
	if Alive(pid, st) {
		t.Error("exited pinned process reported alive")
	}
	unpin()
	unpin() // a second call does nothing
}

func TestAliveInvalidPID(t *testing.T) {
	// PIDs are multiples of 4 on Windows: 4n+1 names no process, and
	// OpenProcess answers ERROR_INVALID_PARAMETER.
	_, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, 0x7ffffff1)
	if classifyOpenErr(err) != openGone {
		t.Fatalf("OpenProcess of a missing PID: %v, classified %d", err, classifyOpenErr(err))
	}
	if Alive(0x7ffffff1, 0) {
		t.Error("missing PID reported alive")
	}
}
