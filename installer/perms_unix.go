//go:build unix

package installer

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
)

// secureDir creates dir (and missing parents) and sets its mode exactly,
// whatever the umask, and its group when group is set.
func secureDir(dir string, mode fs.FileMode, group string) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return err
	}
	if group == "" {
		return nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return fmt.Errorf("look up group: %w", err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("group %s: bad gid %q", group, g.Gid)
	}
	return os.Lchown(dir, -1, gid)
}

// secureFile sets a file's mode.
func secureFile(path string, mode fs.FileMode) error {
	return os.Chmod(path, mode)
}
