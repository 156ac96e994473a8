package installer

import (
	"errors"
	"fmt"
	"testing"
)

func TestExitCodeMapping(t *testing.T) {
	bad := NoRestart(errors.New("bad config"))
	wrapped := fmt.Errorf("starting: %w", bad)
	runtimeErr := errors.New("disk full")
	for _, c := range []struct {
		goos    string
		managed bool
		err     error
		want    int
	}{
		{"linux", true, nil, 0},
		{"linux", true, bad, ExitBadConfig}, // RestartPreventExitStatus=3
		{"linux", false, wrapped, ExitBadConfig},
		{"linux", true, runtimeErr, 1},
		{"darwin", true, bad, 0}, // KeepAlive{SuccessfulExit=false}: only a clean exit stops the respawn
		{"darwin", true, wrapped, 0},
		{"darwin", false, bad, ExitBadConfig}, // a terminal still sees 3
		{"darwin", true, runtimeErr, 1},
		{"windows", false, bad, ExitBadConfig},
		{"windows", true, runtimeErr, 1},
	} {
		if got := exitCode(c.goos, c.managed, c.err); got != c.want {
			t.Errorf("exitCode(%s, managed=%v, %v) = %d, want %d", c.goos, c.managed, c.err, got, c.want)
		}
	}
	if NoRestart(nil) != nil {
		t.Error("NoRestart(nil) is not nil")
	}
	if !errors.Is(wrapped, bad) || IsNoRestart(runtimeErr) {
		t.Error("NoRestart does not wrap")
	}
}

func TestSCMOwnExit(t *testing.T) {
	if report, code := scmOwnExit(fmt.Errorf("load: %w", NoRestart(errors.New("no license key")))); !report || code != ExitBadConfig {
		t.Errorf("config error: report=%v code=%d, want a reported service-specific code %d", report, code, ExitBadConfig)
	}
	for _, err := range []error{errors.New("runtime"), errStoppedUnexpectedly} {
		if report, _ := scmOwnExit(err); report {
			t.Errorf("%v reported as a clean stop: the SCM would not restart it", err)
		}
	}
}
