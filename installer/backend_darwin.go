package installer

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/kardianos/service"
)

func checkSystem() error { return nil }

// launchd replaces kardianos' legacy `launchctl load`/`unload`, which fails
// on current macOS with "Load failed: 5: Input/output error", by
// `launchctl bootstrap`/`bootout` in the system, gui/<uid> or (without a GUI
// session, e.g. over SSH) user/<uid> domain. It falls back to the legacy
// verbs if bootstrap is unavailable.
type launchd struct {
	service.Service
	plist, domain string
}

func wrapBackend(s service.Service, p *Plan) Backend {
	domain := launchdDomain(p.User, os.Getuid(), func(d string) bool {
		_, err := launchctl("print", d)
		return err == nil
	})
	return launchd{Service: s, plist: p.ServiceFile, domain: domain}
}

func launchctl(args ...string) (string, error) {
	out, err := exec.Command("launchctl", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("launchctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (l launchd) Start() error {
	if _, err := launchctl("bootstrap", l.domain, l.plist); err != nil {
		// Already bootstrapped: kick it instead.
		if _, err2 := launchctl("kickstart", l.domain+"/"+ServiceName); err2 == nil {
			return nil
		}
		if err3 := l.Service.Start(); err3 != nil {
			return err
		}
	}
	return nil
}

func (l launchd) Stop() error {
	if _, err := launchctl("bootout", l.domain+"/"+ServiceName); err != nil {
		if err2 := l.Service.Stop(); err2 != nil {
			return err
		}
	}
	return nil
}

func (l launchd) Restart() error {
	if _, err := launchctl("kickstart", "-k", l.domain+"/"+ServiceName); err != nil {
		_ = l.Stop()
		return l.Start()
	}
	return nil
}
