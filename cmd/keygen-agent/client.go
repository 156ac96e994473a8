package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/version"
	"github.com/keygen-agent/keygen-agent/ipc"
)

// socketFlag registers --socket on fs: the agent's socket or pipe, default
// $KEYGEN_AGENT_SOCKET, else the OS default.
func socketFlag(fs *flag.FlagSet, e *env) *string {
	def := e.getenv(ipc.EnvSocket)
	if def == "" {
		def = ipc.DefaultSocketPath()
	}
	return fs.String("socket", def, "the agent's socket or named pipe (env "+ipc.EnvSocket+")")
}

// dialTimeout bounds the first connection attempt of a CLI verb.
const dialTimeout = 5 * time.Second

// dialAgent connects to the agent at path. On failure it prints why to
// stderr and returns exitUnavailable.
func dialAgent(e *env, path string) (*ipc.Client, int) {
	ctx, cancel := context.WithTimeout(e.ctx, dialTimeout)
	defer cancel()
	c, err := ipc.DialOptions(ctx, ipc.ClientOptions{Path: path, App: "keygen-agent-cli", AppVersion: version.Get()})
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent: cannot reach the agent at %s: is it running? (%v)\n", path, errMessage(err))
		return nil, exitUnavailable
	}
	return c, exitOK
}

// exitForCallError prints a failed call's error to stderr and maps it to an
// exit code: unreachable agent 4, refused (permission, license) 5, else 1.
func exitForCallError(e *env, what string, err error) int {
	fmt.Fprintf(e.stderr, "keygen-agent: %s: %s\n", what, errMessage(err))
	switch {
	case ipc.IsCode(err, ipc.CodeUnavailable), errors.Is(err, context.DeadlineExceeded):
		return exitUnavailable
	case ipc.IsCode(err, ipc.CodePermissionDenied), ipc.IsCode(err, ipc.CodeLicenseInvalid),
		ipc.IsCode(err, ipc.CodeNotActivated), ipc.IsCode(err, ipc.CodeOfflineExpired),
		ipc.IsCode(err, ipc.CodeProcessLimitExceeded):
		return exitDenied
	}
	return exitFailure
}

// errMessage renders an ipc error as "message (CODE)".
func errMessage(err error) string {
	var ie *ipc.Error
	if errors.As(err, &ie) {
		if ie.Message != "" && ie.Message != ie.Code {
			return ie.Message + " (" + ie.Code + ")"
		}
		return ie.Code
	}
	return err.Error()
}

// contextWithTimeout derives a bounded context from the verb's context.
func contextWithTimeout(e *env, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, d)
}
