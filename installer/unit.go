package installer

import (
	"fmt"
	"strings"
)

// systemdScript returns our unit template for kardianos' SystemdScript
// option. Plan values (directories, group, target) are substituted here in
// Go; what kardianos knows ({{Description}}, {{Path}}, {{Arguments}},
// {{EnvVars}}) stays a template key in its v1.3 syntax, so the file kardianos
// writes equals Plan.ServiceText. NewPlan has rejected values holding "{{".
//
// Modelled on tailscaled.service: restart quickly and always, except on the
// bad-config exit code; the socket directory is a RuntimeDirectory and the
// cache a StateDirectory with explicit modes.
//
// Hardening is chosen so fingerprinting still works: /sys and /proc stay
// readable (ProtectKernelTunables only makes them read-only; DMI files under
// /sys/class/dmi/id are root-readable and the service runs as root), devices
// stay visible (no PrivateDevices, no DevicePolicy, no ProtectClock, which
// would close the device policy) for disk serials, and AF_NETLINK stays
// allowed for network-interface enumeration.
func systemdScript(p *Plan, group string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("[Unit]")
	w("Description={{Description}}")
	w("Documentation=https://github.com/keygen-agent/keygen-agent")
	w("ConditionFileIsExecutable={{Path | cmdEscape}}")
	if !p.User {
		w("After=network-online.target")
		w("Wants=network-online.target")
	}
	w("StartLimitIntervalSec=60")
	w("StartLimitBurst=20")
	w("")
	w("[Service]")
	w("Type=simple")
	w("ExecStart={{Path | cmdEscape}}{{range Arguments}} {{. | cmd}}{{end}}")
	b.WriteString("{{range EnvVars}}{{.}}\n{{end}}")
	w("Restart=always")
	w("RestartSec=2")
	w("RestartPreventExitStatus=%d", ExitBadConfig)
	w("TimeoutStopSec=20")
	w("KillMode=mixed")
	if group != "" {
		// The runtime and state directories are created owned by the
		// service's user and group: with Group= the socket group can reach
		// the socket directory (0750).
		w("Group=%s", group)
	}
	w("UMask=0027")
	w("RuntimeDirectory=%s", ServiceName)
	w("RuntimeDirectoryMode=0750")
	w("StateDirectory=%s", ServiceName)
	w("StateDirectoryMode=0700")
	w("ConfigurationDirectory=%s", ServiceName)
	w("ConfigurationDirectoryMode=0755")
	w("NoNewPrivileges=yes")
	w("LockPersonality=yes")
	w("RestrictRealtime=yes")
	w("RestrictSUIDSGID=yes")
	w("SystemCallArchitectures=native")
	w("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK")
	if !p.User {
		// Mount-namespace options need privileges a user manager lacks
		// (unless unprivileged user namespaces are on), so user units
		// carry only the seccomp-based ones above.
		w("ProtectSystem=strict")
		w("ProtectHome=read-only")
		w("PrivateTmp=yes")
		w("ProtectKernelTunables=yes")
		w("ProtectKernelModules=yes")
		w("ProtectKernelLogs=yes")
		w("ProtectControlGroups=yes")
		w("ProtectHostname=yes")
		w("RestrictNamespaces=yes")
		w("MemoryDenyWriteExecute=yes")
		// StateDirectory and RuntimeDirectory are writable already; a
		// custom data or socket directory must be named ("-": ignore if
		// absent).
		var rw []string
		for _, d := range []string{p.DataDir, p.SocketDir} {
			if d != "" && d != "/var/lib/"+ServiceName && d != "/run/"+ServiceName {
				rw = append(rw, "-"+systemdPath(d))
			}
		}
		if len(rw) > 0 {
			w("ReadWritePaths=%s", strings.Join(rw, " "))
		}
	}
	w("")
	w("[Install]")
	if p.User {
		// kardianos' own template says multi-user.target, which a user
		// manager never reaches.
		w("WantedBy=default.target")
	} else {
		w("WantedBy=multi-user.target")
	}
	return b.String()
}

// systemdPath escapes a path for a space-separated path list.
func systemdPath(p string) string {
	return strings.NewReplacer(`\`, `\\`, " ", `\x20`).Replace(p)
}

// launchdLogFiles are the agent's log under launchd (written by the agent,
// rotated: run --log-file) and the file launchd sends its stdout and stderr
// to (early errors, panics; cut at start: run --stderr-file).
func launchdLogFiles(logDir string) (log, stderr string) {
	return logDir + "/" + ServiceName + ".log", logDir + "/" + ServiceName + ".stderr.log"
}

// launchdScript returns our plist template for kardianos' LaunchdConfig
// option: RunAtLoad comes from the KeyValue options; stdout and stderr go
// to a file under logDir (the agent's own log is another: launchdLogFiles);
// ThrottleInterval 2 s mirrors RestartSec=2 (launchd's default is
// 10 s). KeepAlive is {SuccessfulExit: false}, not true: launchd then
// restarts the agent only when it exits non-zero, and the agent exits 0 on
// a bad configuration under launchd (installer.ExitCode), the equivalent of
// systemd's RestartPreventExitStatus. KeepAlive=true would respawn a bad
// config every ThrottleInterval forever.
func launchdScript(p *Plan, logDir string) string {
	_, stderr := launchdLogFiles(logDir)
	log := xmlEscape(stderr)
	return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>{{Name | html}}</string>
	<key>ProgramArguments</key>
	<array>
		<string>{{Path | html}}</string>
{{range Arguments}}		<string>{{. | html}}</string>
{{end}}	</array>
{{if EnvVars}}	<key>EnvironmentVariables</key>
	<dict>
{{range EnvVars}}{{.}}
{{end}}	</dict>
{{end}}	<key>RunAtLoad</key>
	<{{RunAtLoad}}/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>2</integer>
	<key>ExitTimeOut</key>
	<integer>20</integer>
	<key>Umask</key>
	<integer>23</integer>
	<key>StandardOutPath</key>
	<string>` + log + `</string>
	<key>StandardErrorPath</key>
	<string>` + log + `</string>
</dict>
</plist>
`
}
