package ipc

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrUntrustedServer is returned (wrapped in an *[Error] with code
// UNAVAILABLE) when the process serving the socket or pipe is not one a
// client may talk to: before sending anything, a client checks that the
// server runs as root/LocalSystem, as the client's own user, or as a user
// listed in [ClientOptions.ServerUsers]. Anyone else could have created the
// pipe while the agent was down, and would read license keys sent by
// `activate` or answer fake lease results.
var ErrUntrustedServer = errors.New("the agent's socket is served by an untrusted process")

// serverTrust is who a client accepts as the server.
type serverTrust struct {
	self  string   // the client's own uid or SID ("" = none)
	users []string // root/LocalSystem and ClientOptions.ServerUsers
}

// trustFor builds the default trust: the OS's superuser, the client's
// own user, and extra.
func trustFor(self, superuser string, extra []string) serverTrust {
	return serverTrust{self: self, users: append([]string{superuser}, extra...)}
}

// allows reports whether a server running as user is trusted.
func (t serverTrust) allows(user string) bool {
	if user == "" {
		return false
	}
	return user == t.self || slices.Contains(t.users, user)
}

// describe lists the trusted accounts for error messages.
func (t serverTrust) describe() string {
	all := t.users
	if t.self != "" {
		all = append([]string{t.self}, all...)
	}
	if len(all) == 0 {
		return "nobody"
	}
	return strings.Join(all, ", ")
}

// untrusted is the error for a server running as user (pid if known).
func untrusted(pid int, user string, t serverTrust) error {
	if pid > 0 {
		return fmt.Errorf("%w: process %d runs as %s; trusted: %s", ErrUntrustedServer, pid, user, t.describe())
	}
	return fmt.Errorf("%w: it runs as %s; trusted: %s", ErrUntrustedServer, user, t.describe())
}
