package installer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/kardianos/service"
	"golang.org/x/sys/windows/svc"
)

// exitOnOwnReturn: the SCM handler (scmHandler.Execute) decides.
func exitOnOwnReturn(*program) {}

// runManaged runs p as a Windows service, talking to the SCM directly
// (golang.org/x/sys/windows/svc) rather than through kardianos, whose
// handler cannot report a service-specific exit code. The process connects
// to the SCM before the agent loads its configuration, so a bad config is
// logged to the event log and reported as exit code ExitBadConfig instead of
// the SCM's bare error 1053.
func runManaged(_ context.Context, name string, p *program) error {
	if err := svc.Run(name, &scmHandler{p: p}); err != nil {
		return fmt.Errorf("service control manager: %w", err)
	}
	return p.result()
}

// scmHandler is the service's control handler.
type scmHandler struct{ p *program }

func (h *scmHandler) Execute(_ []string, r <-chan svc.ChangeRequest, changes chan<- svc.Status) (bool, uint32) {
	changes <- svc.Status{State: svc.StartPending}
	if err := h.p.Start(nil); err != nil {
		return true, 1
	}
	changes <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	for {
		select {
		case c := <-r:
			switch c.Cmd {
			case svc.Interrogate:
				changes <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				changes <- svc.Status{State: svc.StopPending, WaitHint: uint32((h.p.timeout + time.Second).Milliseconds())}
				if err := h.p.Stop(nil); err != nil {
					return true, 2
				}
				return false, 0
			}
		case <-h.p.exited:
			report, code := scmOwnExit(h.p.result())
			if report {
				return true, code
			}
			// A crash to the SCM: its restart action applies.
			h.p.exit(1)
			return false, 1 // not reached
		}
	}
}

// ServiceLogger returns the logger a service should use. Run by the SCM, it
// writes to the Windows event log through kardianos' Logger (source name
// registered at install); otherwise slog with h (nil: text on os.Stderr).
func ServiceLogger(name string, h slog.Handler) *slog.Logger {
	if h == nil {
		h = slog.NewTextHandler(os.Stderr, nil)
	}
	if service.Interactive() {
		return slog.New(h)
	}
	s, err := service.New(noopProgram{}, &service.Config{Name: name})
	if err != nil {
		return slog.New(h)
	}
	l, err := s.Logger(nil)
	if err != nil {
		return slog.New(h)
	}
	return slog.New(&eventLogHandler{l: l, level: slog.LevelInfo})
}

// eventLogHandler formats records as text lines and sends them to the event
// log at the matching severity.
type eventLogHandler struct {
	l      service.Logger
	level  slog.Level
	attrs  []slog.Attr
	groups []string
}

func (h *eventLogHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *eventLogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	prefix := strings.Join(h.groups, ".")
	if prefix != "" {
		prefix += "."
	}
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s%s=%v", prefix, a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	switch {
	case r.Level >= slog.LevelError:
		return h.l.Error(b.String())
	case r.Level >= slog.LevelWarn:
		return h.l.Warning(b.String())
	}
	return h.l.Info(b.String())
}

func (h *eventLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *eventLogHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.groups = append(append([]string(nil), h.groups...), name)
	return &c
}
