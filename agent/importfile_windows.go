package agent

import (
	"fmt"
	"os"
	"path/filepath"
)

// openImport refuses a symlink or reparse point (checked with Lstat) and
// opens anything else; readImport then checks that what it opened is a
// regular file. Windows has no FIFOs that block an open.
func openImport(path string) (*os.File, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file (%s)", errNotImportable, filepath.Base(path), fi.Mode().Type())
	}
	return os.Open(path)
}
