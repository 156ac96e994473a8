//go:build !linux && !darwin && !windows

package installer

import (
	"fmt"
	"runtime"

	"github.com/kardianos/service"
)

func checkSystem() error { return fmt.Errorf("%s: %w", runtime.GOOS, ErrUnsupported) }

func wrapBackend(s service.Service, p *Plan) Backend { return s }
