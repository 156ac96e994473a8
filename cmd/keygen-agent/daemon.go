package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"runtime"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/installer"
	"github.com/keygen-agent/keygen-agent/internal/paths"
	"github.com/keygen-agent/keygen-agent/internal/version"
	"github.com/keygen-agent/keygen-agent/ipc"
)

// errListen marks a socket that cannot be served (taken by another agent,
// bad path): a configuration problem, not worth a restart loop.
var errListen = errors.New("cannot listen")

// daemonOptions wires one agent: its configuration, where it listens, and
// the collaborators tests and `dev` replace.
type daemonOptions struct {
	cfg        agent.Config
	configFile string
	configLoad func() (agent.Config, []string, error)
	logger     *slog.Logger
	logLevel   *slog.LevelVar
	httpClient *http.Client
	deps       agent.Deps // optional overrides (Fingerprinter, Processes, Now)
	// ready, when set, is called once the socket accepts connections.
	ready func(socket string)
}

// runDaemon opens the socket and runs the agent on it (answering
// "starting" while it initialises) until ctx is done or serving fails; the
// agent's Run owns the shutdown (stop accepting, end the leases, close the
// connections and the cache).
func runDaemon(ctx context.Context, o daemonOptions) error {
	cfg := o.cfg
	socket := cfg.Socket
	if socket == "" {
		socket = ipc.DefaultSocketPath()
	}
	if err := secureDirs(cfg, socket); err != nil {
		return err
	}
	deps := o.deps
	deps.Logger, deps.LogLevel = o.logger, o.logLevel
	deps.HTTPClient = o.httpClient
	deps.ConfigFile, deps.ConfigLoad = o.configFile, o.configLoad
	a, err := agent.New(cfg, deps)
	if err != nil {
		return err
	}
	// ipc.Listen creates the socket directory and gives it socket_group,
	// also when the service manager made it.
	ln, err := ipc.Listen(socket, ipc.ListenOptions{Group: cfg.SocketGroup})
	if err != nil {
		return fmt.Errorf("%w on %s: %v", errListen, socket, err)
	}
	o.logger.Info("keygen-agent listening", "socket", socket, "version", version.Get())
	o.logger.Info("configuration", "effective", cfg.Redacted())
	if o.ready != nil {
		o.ready(socket)
	}
	return a.Run(ctx, ln)
}

// secureDirs refuses to start (paths.ErrUnsafe, exit 3) when a directory
// the agent writes, the data, import or socket directory, is owned by
// another user or writable by its group or others, before the agent creates,
// replaces or removes anything in it; a missing per-user fallback socket
// directory in /tmp is created exclusively (see paths.SecureDir). Windows
// pipes have no directory; the installer sets the Windows directories' DACLs.
func secureDirs(cfg agent.Config, socket string) error {
	dirs := []string{cfg.DataDir, cfg.ImportDir}
	if runtime.GOOS != "windows" {
		dirs = append(dirs, filepath.Dir(socket))
	}
	for _, d := range dirs {
		if err := paths.SecureDir(d); err != nil {
			return err
		}
	}
	return nil
}

// newLogger builds the daemon's slog logger: text or JSON on w, stderr
// (the journal captures it under systemd) or, under launchd, the agent's
// rotated log file (run --log-file). Under the Windows service manager it
// goes to the event log.
func newLogger(w io.Writer, format, level string) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err == nil {
		lv.Set(l)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return installer.ServiceLogger("keygen-agent", h), lv
}
