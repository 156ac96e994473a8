package installer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/kardianos/service"
)

// StopTimeout bounds how long the service manager's stop request waits for
// the run function to return (kardianos: Stop must finish in seconds).
const StopTimeout = 5 * time.Second

// RunService runs run under the OS service manager. When the process was not
// started by one (service.Interactive), it simply returns run(ctx).
//
// Under a service manager, Start spawns run with a context derived from ctx
// and returns at once; a stop request (SIGTERM from systemd or launchd, the
// SCM's stop control on Windows) or ctx being done cancels that context and
// waits at most [StopTimeout] for run to return. If run returns on its own,
// the process must end non-zero so the manager's restart policy applies: on
// unix RunService returns (the error, or errStoppedUnexpectedly) and the
// caller exits with [ExitCode]; on Windows, where the SCM loop cannot be left,
// the process exits with code 1 (a crash to the SCM, which restarts it),
// except for an error marked [NoRestart], which is reported to the SCM as
// the service-specific exit code ExitBadConfig (no restart).
//
// logger receives RunService's own messages; use [ServiceLogger] to build
// one that reaches the Windows event log.
func RunService(ctx context.Context, name string, run func(ctx context.Context) error, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if service.Interactive() {
		return run(ctx)
	}
	return runManaged(ctx, name, newProgram(ctx, run, logger))
}

// errStoppedUnexpectedly is returned when run returned nil without a stop.
var errStoppedUnexpectedly = errors.New("agent stopped without being asked to")

// program adapts run to kardianos' service.Interface.
type program struct {
	parent  context.Context
	run     func(context.Context) error
	logger  *slog.Logger
	timeout time.Duration
	exit    func(code int) // os.Exit; replaced in tests

	cancel   context.CancelFunc
	done     chan struct{} // closed when run returned
	exited   chan struct{} // closed when run returned before Stop
	mu       sync.Mutex
	stopping bool
	err      error
}

func newProgram(ctx context.Context, run func(context.Context) error, logger *slog.Logger) *program {
	return &program{parent: ctx, run: run, logger: logger, timeout: StopTimeout, exit: os.Exit,
		done: make(chan struct{}), exited: make(chan struct{})}
}

// Start spawns run and returns at once.
func (p *program) Start(service.Service) error {
	ctx, cancel := context.WithCancel(p.parent)
	p.cancel = cancel
	go func() {
		err := p.run(ctx)
		p.mu.Lock()
		own := !p.stopping && ctx.Err() == nil
		if own && err == nil {
			err = errStoppedUnexpectedly
		}
		p.err = err
		p.mu.Unlock()
		close(p.done)
		if own {
			if IsNoRestart(err) {
				p.logger.Error("agent cannot run; the service manager is told not to restart it", "err", err)
			} else {
				p.logger.Error("agent stopped on its own; exiting non-zero so the service manager restarts it", "err", err)
			}
			close(p.exited)
			exitOnOwnReturn(p)
		}
	}()
	return nil
}

// Stop cancels run and waits at most p.timeout for it.
func (p *program) Stop(service.Service) error {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	if p.cancel != nil {
		p.cancel()
	}
	t := time.NewTimer(p.timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		p.logger.Warn("agent did not stop in time; exiting anyway", "timeout", p.timeout)
		return fmt.Errorf("agent did not stop within %s", p.timeout)
	}
}

// result is the run error once stopped; a cancellation is not an error.
func (p *program) result() error {
	select {
	case <-p.done:
	default:
		return fmt.Errorf("agent did not stop within %s", p.timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if errors.Is(p.err, context.Canceled) {
		return nil
	}
	return p.err
}
