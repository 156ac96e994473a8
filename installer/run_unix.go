//go:build unix

package installer

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/kardianos/service"
)

// runManaged runs p under systemd or launchd through kardianos.
func runManaged(ctx context.Context, name string, p *program) error {
	s, err := service.New(p, &service.Config{
		Name: name,
		Option: service.KeyValue{
			// Wait for our own stop conditions instead of kardianos'
			// private signal handler; main's signal.NotifyContext has
			// already turned SIGINT/SIGTERM into ctx cancellation.
			"RunWait": func() {
				select {
				case <-ctx.Done():
				case <-p.exited:
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("service manager: %w", err)
	}
	if err := s.Run(); err != nil {
		return err
	}
	return p.result()
}

// exitOnOwnReturn: on unix kardianos' Run returns through RunWait (p.exited),
// so RunService returns the error and the caller exits non-zero.
func exitOnOwnReturn(*program) {}

// ServiceLogger returns the logger a service should use. On unix that is
// slog with h (journald captures stderr; under launchd the agent writes its
// own rotated log file: run --log-file); h
// nil means a text handler on os.Stderr.
func ServiceLogger(name string, h slog.Handler) *slog.Logger {
	if h == nil {
		h = slog.NewTextHandler(os.Stderr, nil)
	}
	return slog.New(h)
}
