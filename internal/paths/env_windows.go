package paths

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/windows"
)

// System is the machine-wide layout.
func System() Layout { return For("windows", false, Env{Getenv: os.Getenv}) }

// User is the per-user layout for the current user; its pipe is suffixed
// with the user's SID.
func User() Layout {
	home, _ := os.UserHomeDir()
	env := Env{Home: home, Getenv: os.Getenv}
	if u, err := windows.GetCurrentProcessToken().GetTokenUser(); err == nil {
		env.UserSID = u.User.Sid.String()
	}
	return For("windows", true, env)
}

func join(dir, name string) string { return filepath.Join(dir, name) }
