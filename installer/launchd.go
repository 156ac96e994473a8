package installer

import "fmt"

// launchdDomain picks the launchctl domain a service is bootstrapped in:
// "system" for a LaunchDaemon; for a per-user LaunchAgent gui/<uid> when
// the user has a GUI login session, else user/<uid>. gui/<uid> does not
// exist for a user logged in only over SSH (launchctl answers "Domain does
// not support specified action" or "Could not find domain"), while the
// user/<uid> domain exists whenever the user has any session.
// guiExists reports whether a domain exists (`launchctl print <domain>`).
func launchdDomain(user bool, uid int, guiExists func(domain string) bool) string {
	if !user {
		return "system"
	}
	gui := fmt.Sprintf("gui/%d", uid)
	if guiExists(gui) {
		return gui
	}
	return fmt.Sprintf("user/%d", uid)
}
