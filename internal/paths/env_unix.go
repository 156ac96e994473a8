//go:build unix

package paths

import (
	"os"
	"path/filepath"
	"runtime"
)

// System is the running OS's machine-wide layout.
func System() Layout { return For(runtime.GOOS, false, Env{Getenv: os.Getenv}) }

// User is the running OS's per-user layout for the current user.
func User() Layout {
	home, _ := os.UserHomeDir()
	return For(runtime.GOOS, true, Env{Home: home, Getenv: os.Getenv, UID: os.Getuid()})
}

func join(dir, name string) string { return filepath.Join(dir, name) }
