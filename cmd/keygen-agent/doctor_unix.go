//go:build unix

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/internal/paths"
)

// checkPermissions checks the modes of the config file, the data directory
// and the cache file.
func (d *doctor) checkPermissions() []doctorCheck {
	var out []doctorCheck
	out = append(out, d.checkConfigPerms())
	dataDir := d.dataDir
	if dataDir == "" {
		return append(out, doctorCheck{Check: "data-dir-perms", Status: checkWarn,
			Detail: "not checked (no data directory configured)", Fix: "fix the config check first"})
	}
	out = append(out, checkMode("data-dir-perms", dataDir, true, 0o700,
		"the agent creates it at its first start; keygen-agent install creates it with mode 0700"))
	out = append(out, checkMode("cache-perms", paths.CacheFile(dataDir), false, 0o600,
		"the agent creates it at its first start"))
	return out
}

func (d *doctor) checkConfigPerms() doctorCheck {
	c := doctorCheck{Check: "config-perms"}
	if d.configFile == "" {
		c.Status, c.Detail = checkOK, "no config file"
		return c
	}
	fi, err := os.Stat(d.configFile)
	if errors.Is(err, fs.ErrNotExist) {
		c.Status, c.Detail = checkOK, d.configFile+" does not exist (configuration from the environment)"
		return c
	}
	if err != nil {
		c.Status, c.Detail, c.Fix = checkWarn, "cannot check: "+err.Error(), "run doctor as root/the agent's user"
		return c
	}
	mode := fi.Mode().Perm()
	c.Status, c.Detail = checkOK, fmt.Sprintf("%s mode %04o", d.configFile, mode)
	holdsKey := false
	if data, err := os.ReadFile(d.configFile); err == nil {
		if fc, _, err := agent.ParseConfig(data); err == nil {
			holdsKey = fc.LicenseKey != ""
		}
	}
	switch {
	case mode&0o022 != 0:
		c.Status = checkFail
		c.Detail += ": writable by others, who could point the agent at another server or key"
		c.Fix = "chmod go-w " + d.configFile
	case holdsKey && mode&0o004 != 0:
		c.Status = checkFail
		c.Detail += ": holds license_key and is world-readable"
		c.Fix = "chmod 600 " + d.configFile
	case holdsKey && mode&0o077 != 0:
		c.Status = checkWarn
		c.Detail += ": holds license_key and is readable by the group"
		c.Fix = "chmod 600 " + d.configFile
	}
	if holdsKey && c.Status == checkOK {
		c.Detail += " (holds license_key)"
	}
	return c
}

// checkMode checks that path has no permission bits outside want. A
// world-writable path fails; other extra bits warn.
func checkMode(name, path string, dir bool, want fs.FileMode, missingFix string) doctorCheck {
	c := doctorCheck{Check: name}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.Status, c.Detail, c.Fix = checkOK, path+" does not exist yet", missingFix
		return c
	case err != nil:
		c.Status, c.Detail, c.Fix = checkWarn, "cannot check: "+err.Error(), "run doctor as root (or the agent's user)"
		return c
	case dir && !fi.IsDir():
		c.Status, c.Detail, c.Fix = checkFail, path+" is not a directory", "remove it and restart the agent"
		return c
	}
	mode := fi.Mode().Perm()
	c.Status, c.Detail = checkOK, fmt.Sprintf("%s mode %04o", path, mode)
	if extra := mode &^ want; extra != 0 {
		c.Status = checkWarn
		if mode&0o002 != 0 {
			c.Status = checkFail
		}
		c.Detail += fmt.Sprintf(", want %04o", want)
		c.Fix = fmt.Sprintf("chmod %o %s", want, path)
	}
	return c
}
