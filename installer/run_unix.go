//go:build unix

package installer

import (
	"log/slog"
	"os"
)

// exitOnOwnReturn: on unix kardianos' Run returns through RunWait (p.exited),
// so RunService returns the error and the caller exits non-zero.
func exitOnOwnReturn(*program) {}

// ServiceLogger returns the logger a service should use. On unix that is
// slog to stderr with h (journald and launchd's log file capture stderr); h
// nil means a text handler on os.Stderr.
func ServiceLogger(name string, h slog.Handler) *slog.Logger {
	if h == nil {
		h = slog.NewTextHandler(os.Stderr, nil)
	}
	return slog.New(h)
}
