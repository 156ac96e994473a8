package installer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/kardianos/service"
)

// exitOnOwnReturn: the SCM dispatcher (svc.Run) only returns on a stop
// request, so leave without reporting SERVICE_STOPPED; the SCM sees an
// unexpected termination and applies the OnFailure=restart recovery action.
func exitOnOwnReturn(p *program) { p.exit(1) }

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
