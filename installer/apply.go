package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/kardianos/service"
)

// Backend is the service manager, as kardianos/service exposes it. The
// production Backend is a kardianos service.Service ([NewBackend]); tests use
// a fake.
type Backend interface {
	Install() error
	Uninstall() error
	Start() error
	Stop() error
	Restart() error
	Status() (service.Status, error)
}

var _ Backend = service.Service(nil)

// State is the service's state as this package determines it.
type State int

// States.
const (
	StateNotInstalled State = iota
	StateStopped
	StateRunning
	StateFailed
)

func (s State) String() string {
	switch s {
	case StateStopped:
		return "stopped"
	case StateRunning:
		return "running"
	case StateFailed:
		return "failed"
	}
	return "not-installed"
}

// ErrNotInstalled is returned by Start, Stop and Restart when the service is
// not installed.
var ErrNotInstalled = errors.New("the keygen-agent service is not installed (run keygen-agent install)")

// ServiceStatus reports the service's state. kardianos' Status is unreliable
// on several systems (a stopped systemd or sysv service comes back as an
// "exit status 1" error, not-installed is not always ErrNotInstalled), so
// where the service is a file the file decides "installed", and Status only
// tells running from stopped.
func ServiceStatus(p *Plan, b Backend) (State, error) {
	if p.ServiceFile != "" {
		if _, err := os.Stat(p.Path(p.ServiceFile)); errors.Is(err, fs.ErrNotExist) {
			return StateNotInstalled, nil
		} else if err != nil {
			return StateNotInstalled, fmt.Errorf("check service file: %w", err)
		}
	}
	st, err := b.Status()
	switch {
	case err == nil && st == service.StatusRunning:
		return StateRunning, nil
	case err == nil && st == service.StatusStopped:
		return StateStopped, nil
	case errors.Is(err, service.ErrNotInstalled) && p.ServiceFile == "":
		return StateNotInstalled, nil
	case err != nil && err.Error() == "service in failed state":
		return StateFailed, nil
	}
	if p.ServiceFile != "" {
		// The file exists: installed, and not demonstrably running.
		return StateStopped, nil
	}
	if err != nil {
		return StateNotInstalled, fmt.Errorf("service status: %w", err)
	}
	return StateStopped, nil
}

// reconfigurer is a Backend whose registered service (Windows: no file)
// can be compared with the plan and updated; it returns the changes made.
type reconfigurer interface {
	Reconfigure() ([]string, error)
}

// Result lists what Apply or Uninstall did, one human line each.
type Result struct {
	Actions []string
	// ServiceChanged is set when an installed service's definition was
	// rewritten; a running service must be restarted to pick it up.
	ServiceChanged bool
	// State is the service state before the operation.
	State State
}

func (r *Result) add(format string, a ...any) {
	r.Actions = append(r.Actions, fmt.Sprintf(format, a...))
}

func checkTarget(p *Plan) error {
	if p.OS != runtime.GOOS {
		return fmt.Errorf("plan is for %s, this is %s: %w", p.OS, runtime.GOOS, ErrUnsupported)
	}
	return nil
}

// Apply carries out an install: it creates the directories with their modes
// and group, writes the config file, and installs the service through b. It is
// idempotent: on an installed service it updates the files, rewriting the
// service definition only when it changed, and never fails because the service
// already exists.
func Apply(ctx context.Context, p *Plan, b Backend) (*Result, error) {
	if err := checkTarget(p); err != nil {
		return nil, err
	}
	r := &Result{}
	for _, d := range p.Dirs {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		if err := secureDir(p.Path(d.Path), d.Mode, d.Group); err != nil {
			return r, fmt.Errorf("create %s directory %s: %w", d.Purpose, d.Path, err)
		}
		r.add("directory %s (%s, mode %#o%s)", d.Path, d.Purpose, d.Mode, groupNote(d.Group))
	}
	if err := writeConfig(p, r); err != nil {
		return r, err
	}

	st, err := ServiceStatus(p, b)
	if err != nil {
		return r, err
	}
	r.State = st
	switch {
	case st == StateNotInstalled:
		if err := b.Install(); err != nil {
			return r, fmt.Errorf("install service: %w", err)
		}
		r.add("installed service %s%s", ServiceName, fileNote(p.ServiceFile))
	case p.ServiceFile == "":
		rc, ok := b.(reconfigurer)
		if !ok {
			r.add("service %s already registered; left as is", ServiceName)
			break
		}
		changes, err := rc.Reconfigure()
		if err != nil {
			return r, fmt.Errorf("update service %s: %w", ServiceName, err)
		}
		if len(changes) == 0 {
			r.add("service %s already registered and up to date", ServiceName)
			break
		}
		r.ServiceChanged = true
		for _, c := range changes {
			r.add("updated service %s: %s", ServiceName, c)
		}
	default:
		cur, err := os.ReadFile(p.Path(p.ServiceFile))
		if err != nil {
			return r, fmt.Errorf("read service file: %w", err)
		}
		if bytes.Equal(cur, []byte(p.ServiceText)) {
			r.add("service %s already installed, unchanged", ServiceName)
			break
		}
		// kardianos' Install refuses an existing file: uninstall (which
		// disables but does not stop it) and install again.
		if err := b.Uninstall(); err != nil {
			return r, fmt.Errorf("update service (uninstall old): %w", err)
		}
		if err := b.Install(); err != nil {
			return r, fmt.Errorf("update service (install new): %w", err)
		}
		r.ServiceChanged = true
		r.add("updated service definition %s", p.ServiceFile)
	}
	return r, nil
}

func groupNote(g string) string {
	if g == "" {
		return ""
	}
	return ", group " + g
}

func fileNote(f string) string {
	if f == "" {
		return ""
	}
	return " (" + f + ")"
}

// writeConfig writes the plan's config file. A skeleton never replaces an
// existing file; given content replaces it when it differs.
func writeConfig(p *Plan, r *Result) error {
	path := p.Path(p.ConfigPath)
	cur, err := os.ReadFile(path)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read config %s: %w", p.ConfigPath, err)
	}
	if exists && (p.ConfigIsSkeleton || bytes.Equal(cur, p.ConfigData)) {
		// Keep the file; still make sure a key-bearing file is private.
		mode := fs.FileMode(0o640)
		if containsLicenseKey(cur) {
			mode = 0o600
		}
		if err := secureFile(path, mode); err != nil {
			return fmt.Errorf("set config mode: %w", err)
		}
		r.add("config %s kept", p.ConfigPath)
		return nil
	}
	if err := writeFileAtomic(path, p.ConfigData, p.ConfigMode); err != nil {
		return fmt.Errorf("write config %s: %w", p.ConfigPath, err)
	}
	what := "wrote"
	if exists {
		what = "replaced"
	}
	r.add("%s config %s (mode %#o)", what, p.ConfigPath, p.ConfigMode)
	return nil
}

// writeFileAtomic writes data to a temporary file beside path, sets its mode
// and renames it over path.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := secureFile(tmp, mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// UninstallOptions tune Uninstall.
type UninstallOptions struct {
	// Purge also removes the data and socket directories (the config file
	// is kept).
	Purge bool
}

// Uninstall stops and removes the service and, with Purge, the data. It is
// idempotent: a service that is not installed is not an error.
func Uninstall(ctx context.Context, p *Plan, b Backend, o UninstallOptions) (*Result, error) {
	if err := checkTarget(p); err != nil {
		return nil, err
	}
	r := &Result{}
	st, err := ServiceStatus(p, b)
	if err != nil {
		return r, err
	}
	r.State = st
	if st == StateNotInstalled {
		r.add("service %s not installed", ServiceName)
	} else {
		if st == StateRunning {
			if err := b.Stop(); err != nil {
				return r, fmt.Errorf("stop service: %w", err)
			}
			r.add("stopped service %s", ServiceName)
		}
		if err := b.Uninstall(); err != nil {
			return r, fmt.Errorf("uninstall service: %w", err)
		}
		r.add("removed service %s%s", ServiceName, fileNote(p.ServiceFile))
	}
	if p.ServiceFile != "" {
		// Belt and braces: some kardianos backends leave files behind.
		if err := os.Remove(p.Path(p.ServiceFile)); err == nil {
			r.add("removed leftover %s", p.ServiceFile)
		}
	}
	if o.Purge {
		for _, d := range p.Dirs {
			if d.Purpose != "data" && d.Purpose != "socket" {
				continue
			}
			if err := ctx.Err(); err != nil {
				return r, err
			}
			path := p.Path(d.Path)
			if err := safeToPurge(p, path); err != nil {
				return r, err
			}
			if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err := os.RemoveAll(path); err != nil {
				return r, fmt.Errorf("purge %s: %w", d.Path, err)
			}
			r.add("removed %s directory %s", d.Purpose, d.Path)
		}
	}
	return r, nil
}

// safeToPurge refuses to delete a filesystem root, the staging root or a
// home directory, whatever the data dir was set to.
func safeToPurge(p *Plan, path string) error {
	clean := filepath.Clean(path)
	home, _ := os.UserHomeDir()
	if clean == filepath.Dir(clean) || (p.Root != "" && clean == filepath.Clean(p.Root)) || (home != "" && clean == filepath.Clean(home)) {
		return fmt.Errorf("refusing to purge %s", path)
	}
	return nil
}

// Start starts the installed service; starting a running one is a no-op.
func Start(p *Plan, b Backend) error {
	st, err := ServiceStatus(p, b)
	switch {
	case err != nil:
		return err
	case st == StateNotInstalled:
		return ErrNotInstalled
	case st == StateRunning:
		return nil
	}
	if err := b.Start(); err != nil {
		return fmt.Errorf("start service: %w", err)
	}
	return nil
}

// Stop stops the service; stopping a stopped one is a no-op.
func Stop(p *Plan, b Backend) error {
	st, err := ServiceStatus(p, b)
	switch {
	case err != nil:
		return err
	case st == StateNotInstalled:
		return ErrNotInstalled
	case st != StateRunning:
		return nil
	}
	if err := b.Stop(); err != nil {
		return fmt.Errorf("stop service: %w", err)
	}
	return nil
}

// Restart restarts the service, starting it if it was stopped.
func Restart(p *Plan, b Backend) error {
	st, err := ServiceStatus(p, b)
	switch {
	case err != nil:
		return err
	case st == StateNotInstalled:
		return ErrNotInstalled
	case st != StateRunning:
		if err := b.Start(); err != nil {
			return fmt.Errorf("start service: %w", err)
		}
		return nil
	}
	if err := b.Restart(); err != nil {
		return fmt.Errorf("restart service: %w", err)
	}
	return nil
}
