package installer

import (
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/windows"
)

// Windows has no modes: unix-style modes from the plan map onto explicit,
// protected (non-inherited) DACLs.
const (
	// sddlPrivate: D: DACL, P: protected from inheritance;
	// (A;OICI;FA;;;SY) full access for LocalSystem, inherited by children;
	// (A;OICI;FA;;;BA) the same for the Administrators group.
	sddlPrivate = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
	// sddlReadable adds (A;OICI;GRGX;;;BU): read and traverse for Users.
	sddlReadable = sddlPrivate + "(A;OICI;GRGX;;;BU)"
)

func sddlFor(mode fs.FileMode) string {
	if mode&0o007 != 0 {
		return sddlReadable
	}
	return sddlPrivate
}

// secureDir creates dir and sets its DACL (group is not used on Windows).
func secureDir(dir string, mode fs.FileMode, group string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return setDACL(dir, sddlFor(mode))
}

// secureFile sets a file's DACL: only SYSTEM and Administrators, since a
// config may hold a license key.
func secureFile(path string, mode fs.FileMode) error {
	return setDACL(path, sddlFor(mode))
}

func setDACL(path, sddl string) error {
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("parse SDDL: %w", err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return fmt.Errorf("read DACL: %w", err)
	}
	err = windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
	if err != nil {
		return fmt.Errorf("set ACL on %s: %w", path, err)
	}
	return nil
}
