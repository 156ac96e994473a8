package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit codes shared by every verb. They are documented in the README and in
// `keygen-agent help`.
const (
	exitOK          = 0 // success
	exitFailure     = 1 // the operation failed (details on stderr)
	exitUsage       = 2 // bad flags or arguments
	exitConfig      = 3 // bad configuration: do not restart, fix the config
	exitUnavailable = 4 // the agent (socket) is not reachable
	exitDenied      = 5 // the agent refused: permission denied or not licensed
)

// env is what a verb gets: its arguments and the process's streams.
type env struct {
	ctx    context.Context
	args   []string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// verb is one subcommand. Each lives in its own file and registers itself in
// an init function, so adding a verb touches no shared file.
type verb struct {
	name    string
	summary string
	run     func(e *env) int
}

var verbs = map[string]verb{}

func register(v verb) {
	if _, dup := verbs[v.name]; dup {
		panic("keygen-agent: duplicate verb " + v.name)
	}
	verbs[v.name] = v
}

// run dispatches args[0] to its verb and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	v, ok := verbs[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "keygen-agent: unknown verb %q (see keygen-agent help)\n", args[0])
		return exitUsage
	}
	return v.run(&env{ctx: ctx, args: args[1:], stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv})
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: keygen-agent VERB [flags] [args]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "verbs:")
	names := make([]string, 0, len(verbs))
	for n := range verbs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, verbs[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, exitCodesHelp)
	fmt.Fprintln(w, "Every verb takes --help. Flags come before positional arguments.")
}

const exitCodesHelp = `exit codes:
  0  success
  1  the operation failed
  2  bad flags or arguments
  3  bad configuration (the service manager should not restart)
  4  the agent is not reachable
  5  refused: permission denied or not licensed`

// newFlagSet returns a FlagSet for a verb whose --help prints the summary,
// the flags and the exit codes. extra, if non-empty, is printed after the
// flags (verb-specific exit codes or examples).
func newFlagSet(e *env, name, argsUsage, summary, extra string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "usage: keygen-agent %s [flags] %s\n\n%s\n\nflags:\n", name, argsUsage, summary)
		fs.PrintDefaults()
		if extra != "" {
			fmt.Fprintf(out, "\n%s\n", strings.TrimRight(extra, "\n"))
		} else {
			fmt.Fprintf(out, "\n%s\n", exitCodesHelp)
		}
	}
	return fs
}

// parseFlags parses e.args into fs and maps the outcome onto an exit code:
// ok is false when the verb must return code immediately.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	fs.SetOutput(fs.Output())
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return exitOK, true
}
