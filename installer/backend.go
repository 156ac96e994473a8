package installer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/kardianos/service"
)

// noopProgram satisfies service.Interface for install-only operations, where
// kardianos never calls Start or Stop.
type noopProgram struct{}

func (noopProgram) Start(service.Service) error { return nil }
func (noopProgram) Stop(service.Service) error  { return nil }

// NewBackend returns the OS service manager for p through kardianos/service.
// A plan for another OS or with a Root is refused: use [NewStagingBackend]
// for a Root.
func NewBackend(p *Plan) (Backend, error) {
	if err := checkTarget(p); err != nil {
		return nil, err
	}
	if p.Root != "" {
		return nil, errors.New("a plan with a root directory needs the staging backend")
	}
	if err := checkSystem(); err != nil {
		return nil, err
	}
	cfg := p.Service
	s, err := service.New(noopProgram{}, &cfg)
	if err != nil {
		return nil, fmt.Errorf("service manager: %w", err)
	}
	return wrapBackend(s, p), nil
}

// staging installs into a root directory without a service manager: it
// writes the unit or plist and, for systemd, the symlink `systemctl enable`
// would create. Start, Stop and Restart are not possible.
type staging struct{ p *Plan }

// NewStagingBackend returns a Backend that only writes files under p.Root,
// for building images. Windows services cannot be staged.
func NewStagingBackend(p *Plan) (Backend, error) {
	if p.ServiceFile == "" {
		return nil, fmt.Errorf("staging a %s service: %w", p.OS, ErrUnsupported)
	}
	return staging{p}, nil
}

// ErrNoServiceManager is returned by the staging backend for operations that
// need a running service manager.
var ErrNoServiceManager = errors.New("no service manager when installing into a root directory")

func (s staging) wantsLink() string {
	if s.p.OS != "linux" {
		return ""
	}
	target := "multi-user.target.wants"
	if s.p.User {
		target = "default.target.wants"
	}
	return path.Join(path.Dir(s.p.ServiceFile), target, path.Base(s.p.ServiceFile))
}

func (s staging) Install() error {
	f := s.p.Path(s.p.ServiceFile)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		return err
	}
	if err := writeFileAtomic(f, []byte(s.p.ServiceText), 0o644); err != nil {
		return err
	}
	if l := s.wantsLink(); l != "" {
		link := s.p.Path(l)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return err
		}
		_ = os.Remove(link)
		// Absolute inside the image, as systemctl --root creates it.
		return os.Symlink(s.p.ServiceFile, link)
	}
	return nil
}

func (s staging) Uninstall() error {
	if l := s.wantsLink(); l != "" {
		if err := os.Remove(s.p.Path(l)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	err := os.Remove(s.p.Path(s.p.ServiceFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (staging) Start() error   { return ErrNoServiceManager }
func (staging) Stop() error    { return ErrNoServiceManager }
func (staging) Restart() error { return ErrNoServiceManager }

func (s staging) Status() (service.Status, error) {
	if _, err := os.Stat(s.p.Path(s.p.ServiceFile)); err != nil {
		return service.StatusUnknown, service.ErrNotInstalled
	}
	return service.StatusStopped, nil
}
