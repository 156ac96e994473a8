package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/installer"
	"github.com/keygen-agent/keygen-agent/internal/paths"
)

func init() {
	register(verb{name: "run", summary: "run the agent in the foreground (what the OS service executes)", run: runRun})
}

// runHelp is generated from the agent's field table, like the README's.
func runHelp() string {
	var b strings.Builder
	b.WriteString("Configuration precedence: flags > KEYGEN_* environment variables > config file > defaults.\n")
	b.WriteString("Settings (config key, environment variable, default; \"restart\": a live reload does not apply it):\n")
	for _, f := range agent.ConfigFields() {
		fmt.Fprintf(&b, "  %-28s", f.Key)
		if f.Env != "" {
			fmt.Fprintf(&b, " %-24s", f.Env)
		} else {
			fmt.Fprintf(&b, " %-24s", "")
		}
		if f.Default != "" {
			fmt.Fprintf(&b, " default %s;", f.Default)
		}
		if f.Reload == "restart" {
			b.WriteString(" restart;")
		}
		fmt.Fprintf(&b, " %s\n", f.Validation)
	}
	b.WriteString(`
exit codes:
  0  stopped cleanly (SIGINT/SIGTERM or service stop)
  1  the agent failed at run time (the service manager restarts it)
  2  bad flags
  3  bad configuration, the socket is taken, another agent holds the cache, or a directory the agent
     writes (data, import, socket) is owned by another user or writable by its group or others: fix
     it; do not restart
     (under launchd the agent exits 0 instead, since launchd restarts every non-zero exit; under the
     Windows SCM it reports service-specific exit code 3)`)
	return b.String()
}

func runRun(e *env) int {
	fs := newFlagSet(e, "run", "", "Run the agent in the foreground until interrupted.", runHelp())
	defaults := paths.System()
	defConfig, defData := defaults.ConfigFile, defaults.DataDir
	configFile := fs.String("config", defConfig, "config file (TOML); a missing default file is not an error")
	dataDir := fs.String("data-dir", "", "data directory (cache); default from the config, else "+defData)
	socket := fs.String("socket", "", "socket path (named pipe on Windows); default from the config, else the OS default")
	logFormat := fs.String("log-format", "", "text or json (default text)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	logFile := fs.String("log-file", "", "write the log to this file instead of stderr, renamed to .1 at 10 MiB with 3 old files kept (the launchd plist sets it)")
	stderrFile := fs.String("stderr-file", "", "the file stderr is redirected to (launchd's StandardErrorPath): at start, when over 1 MiB, its last 1 MiB is moved to .1 and it starts over")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	logw, closeLog := openLogs(e.stderr, *logFile, *stderrFile)
	defer closeLog()
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	override := agent.Config{DataDir: *dataDir, Socket: *socket, LogFormat: *logFormat, LogLevel: *logLevel}
	load := func() (agent.Config, []string, error) {
		return agent.Load(agent.LoadOptions{File: *configFile, FileRequired: explicit, Getenv: e.getenv,
			Override: override, DefaultDataDir: defData})
	}
	// Under a service manager the configuration is loaded inside
	// RunService, once the process is connected to it: on Windows a bad
	// config then reaches the event log and the SCM as exit code 3.
	bootLog := installer.ServiceLogger("keygen-agent", slog.NewTextHandler(logw, nil))
	err := installer.RunService(e.ctx, "keygen-agent", func(ctx context.Context) error {
		cfg, warnings, err := load()
		if err != nil {
			if installer.Managed() {
				bootLog.Error("keygen-agent cannot start", "err", err)
			} else {
				fmt.Fprintf(e.stderr, "keygen-agent: %v\n", err)
			}
			return installer.NoRestart(err)
		}
		log, lv := newLogger(logw, cfg.LogFormat, cfg.LogLevel)
		for _, w := range warnings {
			log.Warn("config", "warning", w)
		}
		err = runDaemon(ctx, daemonOptions{cfg: cfg, configFile: *configFile, configLoad: load, logger: log, logLevel: lv})
		if errors.Is(err, agent.ErrConfig) || errors.Is(err, cache.ErrLocked) || errors.Is(err, errListen) ||
			errors.Is(err, paths.ErrUnsafe) {
			log.Error("keygen-agent cannot start", "err", err)
			return installer.NoRestart(err)
		}
		if err != nil {
			log.Error("keygen-agent stopped", "err", err)
		}
		return err
	}, bootLog)
	return installer.ExitCode(err)
}
