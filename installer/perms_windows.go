package installer

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/windows"
)

func sddlFor(mode fs.FileMode) string {
	if mode&0o007 != 0 {
		return sddlReadable
	}
	return sddlPrivate
}

// secureDir creates dir, or checks an existing one, and sets its owner
// (Administrators) and DACL (group is not used on Windows). A directory
// that is a reparse point (junction, symlink) is refused: a user could point
// it elsewhere. Entries inside an existing directory owned by anyone but
// SYSTEM, Administrators or TrustedInstaller are refused too: they were put
// there by someone else, and their owner could re-grant themselves access.
func secureDir(dir string, mode fs.FileMode, group string) error {
	if err := refuseReparse(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := refuseReparse(dir); err != nil {
		return err
	}
	if err := setSecurity(dir, sddlFor(mode)); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		owner, err := Owner(p)
		if err != nil {
			return err
		}
		if !TrustedOwner(owner) {
			return fmt.Errorf("%s is owned by %s, not SYSTEM or Administrators: it was not created by the installer or the service; remove it and rerun install", p, owner)
		}
	}
	return nil
}

// refuseReparse fails if path exists and is a reparse point.
func refuseReparse(path string) error {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return err
	}
	attrs, err := windows.GetFileAttributes(p)
	if err != nil {
		return nil // absent: MkdirAll creates it
	}
	if attrs&windows.FILE_ATTRIBUTE_REPARSE_POINT != 0 {
		return fmt.Errorf("%s is a junction or symbolic link; refusing to use it as the agent's directory", path)
	}
	return nil
}

// secureFile sets a file's owner and DACL: only SYSTEM and Administrators,
// since a config may hold a license key.
func secureFile(path string, mode fs.FileMode) error {
	return setSecurity(path, sddlFor(mode))
}

// Owner returns the SID string of the owner of a file or directory.
func Owner(path string) (string, error) {
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.OWNER_SECURITY_INFORMATION)
	if err != nil {
		return "", fmt.Errorf("read owner of %s: %w", path, err)
	}
	o, _, err := sd.Owner()
	if err != nil {
		return "", fmt.Errorf("read owner of %s: %w", path, err)
	}
	return o.String(), nil
}

// setSecurity sets the owner and protected DACL of sddl on path. Taking
// ownership for Administrators needs an elevated token, as install has.
func setSecurity(path, sddl string) error {
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("parse SDDL: %w", err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return fmt.Errorf("read DACL: %w", err)
	}
	owner, _, err := sd.Owner()
	if err != nil {
		return fmt.Errorf("read owner: %w", err)
	}
	err = windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, owner, nil, dacl, nil)
	if err != nil {
		return fmt.Errorf("set owner and ACL on %s: %w", path, err)
	}
	return nil
}
