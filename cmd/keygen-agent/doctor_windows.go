//go:build windows

package main

// checkPermissions is not done on Windows: the installer sets ACLs, which
// file modes do not describe.
func (d *doctor) checkPermissions() []doctorCheck {
	return []doctorCheck{{Check: "permissions", Status: checkOK,
		Detail: "not checked on Windows (keygen-agent install sets the ACLs)"}}
}
