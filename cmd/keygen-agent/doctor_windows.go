//go:build windows

package main

import (
	"fmt"
	"path/filepath"

	"github.com/keygen-agent/keygen-agent/installer"
)

// checkPermissions checks who owns the data and config directories: the
// owner may rewrite a directory's ACL, so one a standard user created
// before the install gives them the license key and the config the
// LocalSystem service trusts. The ACLs themselves are set by install.
func (d *doctor) checkPermissions() []doctorCheck {
	var out []doctorCheck
	dirs := []string{d.dataDir}
	if d.configFile != "" {
		dirs = append(dirs, filepath.Dir(d.configFile))
	}
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		owner, err := installer.Owner(dir)
		switch {
		case err != nil:
			out = append(out, doctorCheck{Check: "owner " + dir, Status: checkWarn, Detail: err.Error()})
		case !installer.TrustedOwner(owner):
			out = append(out, doctorCheck{Check: "owner " + dir, Status: checkFail,
				Detail: fmt.Sprintf("owned by %s, not SYSTEM or Administrators: that account can re-grant itself access", owner),
				Fix:    "run keygen-agent install as an administrator (it takes ownership), or remove the directory first"})
		default:
			out = append(out, doctorCheck{Check: "owner " + dir, Status: checkOK, Detail: "owned by " + owner})
		}
	}
	return out
}
