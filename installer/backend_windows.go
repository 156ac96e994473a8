package installer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kardianos/service"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

func checkSystem() error { return nil }

// StopDeadline bounds how long stop, restart and uninstall wait for the
// service to reach STOPPED.
const StopDeadline = 30 * time.Second

// scm wraps kardianos' Windows service: Stop and Restart wait with a
// deadline (kardianos' wait never ends on a service stuck in STOP_PENDING),
// and Reconfigure brings an installed service in line with the plan.
type scm struct {
	service.Service
	p *Plan
}

func wrapBackend(s service.Service, p *Plan) Backend { return scm{Service: s, p: p} }

// open connects to the SCM and opens the service with access.
func openService(access uint32) (*mgr.Mgr, *mgr.Service, error) {
	h, err := windows.OpenSCManager(nil, nil, windows.SC_MANAGER_CONNECT)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to the service control manager: %w", err)
	}
	m := &mgr.Mgr{Handle: h}
	name, _ := windows.UTF16PtrFromString(ServiceName)
	sh, err := windows.OpenService(h, name, access)
	if err != nil {
		m.Disconnect()
		if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
			return nil, nil, ErrNotInstalled
		}
		return nil, nil, fmt.Errorf("open service %s: %w", ServiceName, err)
	}
	return m, &mgr.Service{Name: ServiceName, Handle: sh}, nil
}

func queryState(s *mgr.Service) func() (svcState, error) {
	return func() (svcState, error) {
		st, err := s.Query()
		if err != nil {
			return svcState{}, err
		}
		return svcState{Stopped: st.State == svc.Stopped, Pending: st.State == svc.StopPending, PID: st.ProcessId}, nil
	}
}

func (b scm) Stop() error {
	m, s, err := openService(windows.SERVICE_STOP | windows.SERVICE_QUERY_STATUS)
	if err != nil {
		return err
	}
	defer m.Disconnect()
	defer s.Close()
	if _, err := s.Control(svc.Stop); err != nil && !errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
		return fmt.Errorf("stop service: %w", err)
	}
	return waitStopped(context.Background(), queryState(s), 100*time.Millisecond, StopDeadline)
}

func (b scm) Restart() error {
	if err := b.Stop(); err != nil {
		return err
	}
	return b.Service.Start()
}

// Reconfigure compares the installed service with the plan and updates
// the command line, names, start type, environment and recovery actions
// that differ. It returns the changes made (nil: none).
func (b scm) Reconfigure() ([]string, error) {
	m, s, err := openService(windows.SERVICE_QUERY_CONFIG | windows.SERVICE_CHANGE_CONFIG | windows.SERVICE_START)
	if err != nil {
		return nil, err
	}
	defer m.Disconnect()
	defer s.Close()
	want := wantWinService(b.p)
	cfg, err := s.Config()
	if err != nil {
		return nil, fmt.Errorf("read service config: %w", err)
	}
	have := winServiceConfig{BinaryPath: cfg.BinaryPathName, DisplayName: cfg.DisplayName, Description: cfg.Description,
		StartType: cfg.StartType, DelayedAutoStart: cfg.DelayedAutoStart}
	key := `SYSTEM\CurrentControlSet\Services\` + ServiceName
	if k, err := registry.OpenKey(registry.LOCAL_MACHINE, key, registry.QUERY_VALUE); err == nil {
		have.Env, _, _ = k.GetStringsValue("Environment")
		k.Close()
		slices.Sort(have.Env)
	}
	if acts, err := s.RecoveryActions(); err == nil && len(acts) > 0 && acts[0].Type == mgr.ServiceRestart {
		have.RestartDelay = acts[0].Delay
	}
	have.ResetPeriod, _ = s.ResetPeriod()
	have.NonCrashFailures, _ = s.RecoveryActionsOnNonCrashFailures()
	changes := want.diff(have)
	if len(changes) == 0 {
		return nil, nil
	}
	cfg.BinaryPathName = want.BinaryPath
	cfg.DisplayName, cfg.Description = want.DisplayName, want.Description
	cfg.StartType, cfg.DelayedAutoStart = want.StartType, want.DelayedAutoStart
	if err := s.UpdateConfig(cfg); err != nil {
		return nil, fmt.Errorf("update service config: %w", err)
	}
	if !slices.Equal(have.Env, want.Env) {
		k, err := registry.OpenKey(registry.LOCAL_MACHINE, key, registry.SET_VALUE)
		if err != nil {
			return nil, fmt.Errorf("open service key: %w", err)
		}
		if len(want.Env) == 0 {
			err = k.DeleteValue("Environment")
			if errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
				err = nil
			}
		} else {
			err = k.SetStringsValue("Environment", want.Env)
		}
		k.Close()
		if err != nil {
			return nil, fmt.Errorf("set service environment: %w", err)
		}
	}
	if err := s.SetRecoveryActions([]mgr.RecoveryAction{{Type: mgr.ServiceRestart, Delay: want.RestartDelay}}, want.ResetPeriod); err != nil {
		return nil, fmt.Errorf("set recovery actions: %w", err)
	}
	if err := s.SetRecoveryActionsOnNonCrashFailures(false); err != nil {
		return nil, fmt.Errorf("set recovery on non-crash failures: %w", err)
	}
	return changes, nil
}
