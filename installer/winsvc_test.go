package installer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func winPlan(t *testing.T, exe string, env map[string]string) *Plan {
	t.Helper()
	p, err := NewPlan(Options{OS: "windows", Executable: exe, Env: env, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWinServiceConfigRendering(t *testing.T) {
	p := winPlan(t, `C:\Program Files\Vendor\keygen-agent.exe`, map[string]string{"KEYGEN_ENVIRONMENT": "production", "A": "1"})
	got := wantWinService(p)
	want := winServiceConfig{
		BinaryPath:   `"C:\Program Files\Vendor\keygen-agent.exe" run --config C:\ProgramData\keygen-agent\agent.toml`,
		DisplayName:  ServiceDisplayName,
		Description:  ServiceDescription,
		StartType:    winStartAutomatic,
		Env:          []string{"A=1", "KEYGEN_ENVIRONMENT=production"},
		RestartDelay: 2 * time.Second,
		ResetPeriod:  86400,
	}
	if d := want.diff(got); len(d) != 0 {
		t.Fatalf("rendered config differs: %v\n%+v", d, got)
	}
}

// TestWinServiceDiff pins issue 17 item 5: a moved executable, changed
// arguments, environment or recovery settings are all noticed.
func TestWinServiceDiff(t *testing.T) {
	old := wantWinService(winPlan(t, `C:\Program Files\Vendor 1.0\keygen-agent.exe`, map[string]string{"KEYGEN_LICENSE_KEY": "secret-1"}))
	now := wantWinService(winPlan(t, `C:\Program Files\Vendor 2.0\keygen-agent.exe`, map[string]string{"KEYGEN_LICENSE_KEY": "secret-2"}))
	old.RestartDelay = time.Minute
	old.NonCrashFailures = true
	d := now.diff(old)
	joined := strings.Join(d, "\n")
	for _, want := range []string{"command line", "Vendor 2.0", "environment", "recovery: restart after 1m0s", "non-crash"} {
		if !strings.Contains(joined, want) {
			t.Errorf("diff lacks %q:\n%s", want, joined)
		}
	}
	if strings.Contains(joined, "secret") {
		t.Errorf("diff shows environment values:\n%s", joined)
	}
	if d := now.diff(now); len(d) != 0 {
		t.Errorf("identical configs differ: %v", d)
	}
	// The SCM may report the path in another case.
	up := now
	up.BinaryPath = strings.ToUpper(up.BinaryPath)
	if d := now.diff(up); len(d) != 0 {
		t.Errorf("case-only difference reported: %v", d)
	}
}

func TestWinEscapeArg(t *testing.T) {
	for in, want := range map[string]string{
		``:                  `""`,
		`run`:               `run`,
		`C:\a b\x.exe`:      `"C:\a b\x.exe"`,
		`C:\a b\`:           `"C:\a b\\"`,
		`say "hi"`:          `"say \"hi\""`,
		`a\"b c`:            `"a\\\"b c"`,
		`C:\no\spaces\here`: `C:\no\spaces\here`,
	} {
		if got := winEscapeArg(in); got != want {
			t.Errorf("winEscapeArg(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestWaitStoppedDeadline pins issue 17 item 6: a service stuck in
// STOP_PENDING ends the wait at the deadline with a clear error.
func TestWaitStoppedDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		queries := 0
		err := waitStopped(context.Background(), func() (svcState, error) {
			queries++
			return svcState{Pending: true, PID: 4242}, nil
		}, 100*time.Millisecond, 30*time.Second)
		if !errors.Is(err, ErrStopTimeout) || !strings.Contains(err.Error(), "STOP_PENDING") || !strings.Contains(err.Error(), "4242") {
			t.Fatalf("err = %v", err)
		}
		if d := time.Since(start); d != 30*time.Second {
			t.Errorf("waited %v", d)
		}
		if queries < 100 {
			t.Errorf("only %d status queries", queries)
		}
	})
}

func TestWaitStoppedStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		err := waitStopped(context.Background(), func() (svcState, error) {
			return svcState{Stopped: time.Since(start) >= 3*time.Second, Pending: true}, nil
		}, 100*time.Millisecond, 30*time.Second)
		if err != nil || time.Since(start) != 3*time.Second {
			t.Fatalf("err %v after %v", err, time.Since(start))
		}
		boom := errors.New("rpc failed")
		if err := waitStopped(context.Background(), func() (svcState, error) { return svcState{}, boom }, time.Second, time.Minute); !errors.Is(err, boom) {
			t.Fatalf("query error lost: %v", err)
		}
	})
}
