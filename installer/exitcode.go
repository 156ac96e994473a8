package installer

import (
	"errors"
	"runtime"

	"github.com/kardianos/service"
)

// noRestart marks an error after which the service manager must not
// restart the agent (a bad configuration, a taken socket, a cache another
// agent holds): restarting cannot help and only floods the log.
type noRestart struct{ err error }

func (e noRestart) Error() string { return e.err.Error() }
func (e noRestart) Unwrap() error { return e.err }

// NoRestart marks err as "do not restart"; nil stays nil. [RunService]
// reports such an error to the service manager so that it does not restart
// the agent, and [ExitCode] maps it to the exit status that says so.
func NoRestart(err error) error {
	if err == nil {
		return nil
	}
	return noRestart{err}
}

// IsNoRestart reports whether err was marked by [NoRestart].
func IsNoRestart(err error) bool {
	var n noRestart
	return errors.As(err, &n)
}

// Managed reports whether the process was started by a service manager
// (systemd, launchd, the Windows SCM) rather than from a terminal.
func Managed() bool { return !service.Interactive() }

// ExitCode is the process exit status for the error [RunService] returned,
// on this OS and whether managed or not (see [exitCode]).
func ExitCode(err error) int { return exitCode(runtime.GOOS, Managed(), err) }

// exitCode maps the run error to the exit status:
//
//	nil                0
//	NoRestart          ExitBadConfig (3): systemd's RestartPreventExitStatus
//	                   and the documented CLI status; but 0 under launchd,
//	                   whose KeepAlive {SuccessfulExit: false} restarts every
//	                   non-zero exit and has no "prevent" list
//	anything else      1: a runtime failure the manager restarts
//
// Under the Windows SCM the exit status is not what the SCM sees: the
// service reports ExitBadConfig as its service-specific exit code (see
// scmOwnExit) and ends with SERVICE_STOPPED, which no recovery action
// follows.
func exitCode(goos string, managed bool, err error) int {
	switch {
	case err == nil:
		return 0
	case IsNoRestart(err):
		if goos == "darwin" && managed {
			return 0
		}
		return ExitBadConfig
	}
	return 1
}

// scmOwnExit decides what the Windows service does when the agent returned
// without being asked to stop. A NoRestart error is reported to the SCM as
// SERVICE_STOPPED with the service-specific exit code ExitBadConfig
// (report): the recovery actions apply only to crashes unless
// FailureActionsOnNonCrashFailures is set, which the installer leaves off,
// so the SCM does not restart it, and services.msc and the System event log
// show code 3. Any other return is a runtime failure: the process exits
// with code 1 without reporting SERVICE_STOPPED, which the SCM counts as a
// crash and answers with the restart action.
func scmOwnExit(err error) (report bool, serviceCode uint32) {
	if IsNoRestart(err) {
		return true, ExitBadConfig
	}
	return false, 0
}
