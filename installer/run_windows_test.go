package installer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"golang.org/x/sys/windows/svc"
)

// On Windows the program does not exit by itself: scmHandler decides.
func exitOnOwnReturnCheck(t *testing.T, exited int) {
	if exited != -1 {
		t.Errorf("exit(%d) called by the program itself", exited)
	}
}

// execute runs scmHandler.Execute with run, sending req (if any) once the
// service reports Running, and returns what Execute returned and the code
// passed to exit (-1: none).
func execute(t *testing.T, run func(context.Context) error, req *svc.ChangeRequest) (bool, uint32, int) {
	t.Helper()
	p := newProgram(context.Background(), run, slog.New(slog.DiscardHandler))
	exited := -1
	p.exit = func(code int) { exited = code }
	r := make(chan svc.ChangeRequest, 1)
	changes := make(chan svc.Status, 8)
	if req != nil {
		r <- *req
	}
	ssec, code := (&scmHandler{p: p}).Execute(nil, r, changes)
	return ssec, code, exited
}

func TestSCMHandlerBadConfigIsReported(t *testing.T) {
	ssec, code, exited := execute(t, func(context.Context) error {
		return fmt.Errorf("load: %w", NoRestart(errors.New("no license key")))
	}, nil)
	if !ssec || code != ExitBadConfig || exited != -1 {
		t.Fatalf("Execute = (%v, %d), exit %d; want the service-specific code %d and no crash", ssec, code, exited, ExitBadConfig)
	}
}

func TestSCMHandlerRuntimeFailureCrashes(t *testing.T) {
	_, _, exited := execute(t, func(context.Context) error { return errors.New("disk full") }, nil)
	if exited != 1 {
		t.Fatalf("exit %d, want 1 (a crash, so the SCM's restart action applies)", exited)
	}
}

func TestSCMHandlerStop(t *testing.T) {
	ssec, code, exited := execute(t, func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}, &svc.ChangeRequest{Cmd: svc.Stop})
	if ssec || code != 0 || exited != -1 {
		t.Fatalf("stop: Execute = (%v, %d), exit %d", ssec, code, exited)
	}
}
