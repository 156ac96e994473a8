// Command keygen-agent is the per-machine licensing agent: one binary that runs
// the daemon, installs it as an OS service, and talks to it as a client.
//
// The verbs live one per file in this directory; see cli.go for the dispatcher.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
