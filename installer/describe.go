package installer

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Describe renders the plan for humans (install --dry-run) and for golden
// tests: the service definition, its options, the directories, the config
// file (license key redacted) and the unit or plist text.
func (p *Plan) Describe() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	mode := "system"
	if p.User {
		mode = "user"
	}
	w("# keygen-agent install plan: %s, %s service", p.OS, mode)
	if p.Root != "" {
		w("root: %s", p.Root)
	}
	w("service: %s (%q)", p.Service.Name, p.Service.DisplayName)
	w("description: %s", p.Service.Description)
	w("executable: %s", p.Service.Executable)
	w("arguments: %q", p.Service.Arguments)
	if len(p.Service.EnvVars) > 0 {
		w("environment:")
		for _, l := range envLines(p.Service.EnvVars, func(k, v string) string { return k + "=" + v }) {
			w("  %s", l)
		}
	}
	w("options:")
	keys := make([]string, 0, len(p.Service.Option))
	for k := range p.Service.Option {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := p.Service.Option[k]
		if k == "SystemdScript" || k == "LaunchdConfig" {
			v = "(our template; rendered below)"
		}
		w("  %s = %v", k, v)
	}
	w("directories:")
	for _, d := range p.Dirs {
		w("  %-7s %#o %s%s", d.Purpose, d.Mode, d.Path, groupNote(d.Group))
	}
	if p.SocketPath != "" {
		w("socket: %s", p.SocketPath)
	}
	how := "write"
	if p.ConfigIsSkeleton {
		how = "write if missing"
	}
	w("config: %s (mode %#o, %s)", p.ConfigPath, p.ConfigMode, how)
	for _, l := range strings.Split(strings.TrimRight(RedactConfig(string(p.ConfigData)), "\n"), "\n") {
		w("  | %s", l)
	}
	if p.ServiceFile != "" {
		w("service file: %s", p.ServiceFile)
		for _, l := range strings.Split(strings.TrimRight(p.ServiceText, "\n"), "\n") {
			w("  | %s", l)
		}
	}
	return b.String()
}

var licenseKeyLine = regexp.MustCompile(`(?m)^(\s*license_key\s*=\s*)(\S.*)$`)

// RedactConfig hides license_key values in a TOML text.
func RedactConfig(s string) string {
	return licenseKeyLine.ReplaceAllString(s, `${1}"<redacted>"`)
}
