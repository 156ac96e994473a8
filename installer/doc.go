// Package installer owns keygen-agent's life as an OS service: the service
// definition (a systemd unit, a launchd plist, a Windows SCM entry), the
// directories it needs with their owners and modes, the config file written at
// install time, and install/uninstall/start/stop/restart through
// github.com/kardianos/service. It also adapts the daemon's run function to
// the service manager ([RunService]).
//
// The work is split in two. [NewPlan] is pure: from [Options] it derives a
// [Plan] holding the kardianos service.Config with its KeyValue options, the
// directories, the config file and the rendered unit or plist text, so plans
// for every OS can be golden-tested on any machine without root. [Apply],
// [Uninstall], [Start], [Stop], [Restart] and [ServiceStatus] carry a plan out
// through a [Backend], which is kardianos in production ([NewBackend]), a
// files-only staging backend for images ([NewStagingBackend]) and a fake in
// tests.
//
// kardianos/service v1.3 is used only behind [Backend], and its known traps
// are handled here: its built-in systemd unit (RestartSec=120, user units
// WantedBy=multi-user.target, no hardening) and plist are replaced by our own
// templates written in its v1.3 mini-template syntax; its Install refuses an
// existing service, so re-installing is made idempotent here; its Status
// errors are mapped by checking the unit or plist file ourselves.
//
// Package installer must not run the daemon itself: [RunService] calls the
// run function it is given.
package installer
