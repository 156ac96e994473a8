package main

import (
	"fmt"
	"io"
	"os"

	"github.com/keygen-agent/keygen-agent/internal/logfile"
)

// Bounds of the agent's own log files (run --log-file, --stderr-file):
// launchd appends a job's output to its StandardOutPath/StandardErrorPath
// forever, so under launchd the agent writes its log itself.
const (
	logMaxBytes    = 10 << 20 // the log is renamed to .1 at 10 MiB
	logKeep        = 3        // .1 to .3 are kept: at most 40 MiB in all
	stderrMaxBytes = 1 << 20  // stderr's file is cut to its last 1 MiB at start
)

// openLogs bounds the file stderr is redirected to (stderrFile, checked to
// be stderr's file) and opens the rotating log at logFile. Either may be
// "". The log goes to the returned writer: logFile's, or stderr when it is
// "" or cannot be opened (the reason is written to stderr; logging is not
// worth refusing to serve licenses).
func openLogs(stderr io.Writer, logFile, stderrFile string) (io.Writer, func()) {
	if f, ok := stderr.(*os.File); ok && stderrFile != "" {
		if _, err := logfile.Trim(f, stderrFile, stderrMaxBytes); err != nil {
			fmt.Fprintf(stderr, "keygen-agent: bounding %s: %v\n", stderrFile, err)
		}
	}
	if logFile == "" {
		return stderr, func() {}
	}
	// Root's log (a system service) is readable by the log directory's
	// group (admin on macOS); a user's only by the user.
	mode := os.FileMode(0o600)
	if os.Geteuid() == 0 {
		mode = 0o640
	}
	w, err := logfile.Open(logFile, logfile.Options{MaxBytes: logMaxBytes, Keep: logKeep, Mode: mode, Fallback: stderr})
	if err != nil {
		fmt.Fprintf(stderr, "keygen-agent: log file: %v; logging to stderr\n", err)
		return stderr, func() {}
	}
	return w, func() { w.Close() }
}
