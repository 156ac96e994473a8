package main

import (
	"fmt"

	"github.com/keygen-agent/keygen-agent/installer"
)

func init() {
	for _, v := range []struct{ name, summary string }{
		{"start", "start the installed service"},
		{"stop", "stop the service"},
		{"restart", "restart the service (starts it if stopped)"},
	} {
		name := v.name
		register(verb{name: name, summary: v.summary, run: func(e *env) int { return runLifecycle(e, name) }})
	}
}

// runLifecycle runs start, stop or restart through the OS service manager.
// Starting a running service and stopping a stopped one succeed.
func runLifecycle(e *env, name string) int {
	fs := newFlagSet(e, name, "", fmt.Sprintf("%s the keygen-agent OS service (see keygen-agent install).", name),
		"exit codes: 0 ok, 1 failed or not installed, 2 usage, 5 permission denied")
	user := fs.Bool("user", false, "the per-user service instead of the system one")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(e.stderr, "%s: unexpected arguments\n", name)
		return exitUsage
	}
	p, err := installer.NewPlan(installer.Options{User: *user})
	if err != nil {
		fmt.Fprintf(e.stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	b, err := serviceBackend(p)
	if err != nil {
		return serviceError(e, name, err)
	}
	switch name {
	case "start":
		err = installer.Start(p, b)
	case "stop":
		err = installer.Stop(p, b)
	default:
		err = installer.Restart(p, b)
	}
	if err != nil {
		return serviceError(e, name, err)
	}
	st, err := installer.ServiceStatus(p, b)
	if err != nil {
		fmt.Fprintf(e.stdout, "%s: done\n", name)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "keygen-agent service: %s\n", st)
	return exitOK
}
