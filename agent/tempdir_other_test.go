//go:build !linux

package agent

import "os"

// testTempRoot is where the harness puts an agent's data directory (see
// tempdir_linux_test.go).
func testTempRoot() string { return os.TempDir() }
