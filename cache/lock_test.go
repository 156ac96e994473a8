package cache

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSecondOpenerSameProcess(t *testing.T) {
	path := dbPath(t)
	s := openT(t, path)
	start := time.Now()
	s2, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second Open succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("second Open took %v", time.Since(start))
	}
	want := fmt.Sprintf("another keygen-agent holds %s (pid %d)", path, os.Getpid())
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("message %q does not contain %q", err, want)
	}
	var le *LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() || le.Path != path {
		t.Fatalf("LockedError = %+v", le)
	}
	// The holder is unaffected and the lock is released by Close.
	if err := s.PutLease(LeaseRecord{ID: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + pidSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pid sidecar left after Close: %v", err)
	}
	s3 := openT(t, path)
	if ls, err := s3.Leases(); err != nil || len(ls) != 1 {
		t.Fatalf("after reopen: %v, %v", ls, err)
	}
}

const lockHelperEnv = "KGA_CACHE_LOCK_HELPER_PATH"

// TestLockHelperProcess is not a test: TestSecondOpenerOtherProcess runs the
// test binary again with this test selected and the env var set.
func TestLockHelperProcess(t *testing.T) {
	path := os.Getenv(lockHelperEnv)
	if path == "" {
		t.Skip("helper process only")
	}
	s, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
	switch {
	case err == nil:
		s.Close()
		fmt.Println("RESULT opened")
	case errors.Is(err, ErrLocked):
		fmt.Println("RESULT locked:", err)
	default:
		fmt.Println("RESULT error:", err)
	}
}

func runLockHelper(t *testing.T, path string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if r, ok := strings.CutPrefix(line, "RESULT "); ok {
			return r
		}
	}
	t.Fatalf("helper printed no result:\n%s", out)
	return ""
}

func TestSecondOpenerOtherProcess(t *testing.T) {
	path := dbPath(t)
	s := openT(t, path)
	got := runLockHelper(t, path)
	want := "locked: cache: another keygen-agent holds " + path + " (pid " + strconv.Itoa(os.Getpid()) + ")"
	if got != want {
		t.Fatalf("other process: %q\nwant %q", got, want)
	}
	s.Close()
	if got := runLockHelper(t, path); got != "opened" {
		t.Fatalf("other process after Close: %q", got)
	}
}
