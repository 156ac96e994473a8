package installer

import (
	"fmt"

	"github.com/kardianos/service"
)

// checkSystem refuses Linux init systems other than systemd: the plan is a
// systemd unit, and kardianos would otherwise silently write an init script.
func checkSystem() error {
	if s := service.ChosenSystem(); s == nil || s.String() != "linux-systemd" {
		name := "none"
		if s != nil {
			name = s.String()
		}
		return fmt.Errorf("service manager %s: %w (keygen-agent installs systemd units; run it under your init system with \"keygen-agent run\")", name, ErrUnsupported)
	}
	return nil
}

func wrapBackend(s service.Service, p *Plan) Backend { return s }
