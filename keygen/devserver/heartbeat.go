package devserver

import "time"

// Heartbeat statuses.
const (
	statusNotStarted  = "NOT_STARTED"
	statusAlive       = "ALIVE"
	statusDead        = "DEAD"
	statusResurrected = "RESURRECTED"
)

func (s *Server) machinePolicy(m *machine) *Policy {
	if l := s.license(m.LicenseID); l != nil {
		return s.licensePolicy(l)
	}
	return &Policy{}
}

// machineStatus is Machine#heartbeat_status (keygen-api app/models/machine.rb).
func (s *Server) machineStatus(m *machine, now time.Time) string {
	pol := s.machinePolicy(m)
	d := pol.heartbeatDuration()
	if m.LastHeartbeat == nil {
		if !pol.RequireHeartbeat || m.Created.Add(d).After(now) {
			return statusNotStarted
		}
		return statusDead
	}
	if !m.LastHeartbeat.Add(d).Before(now) {
		return statusAlive
	}
	return statusDead
}

// machineNext is when the machine's next heartbeat is due (nil if it has
// never pinged).
func (s *Server) machineNext(m *machine) *time.Time {
	if m.LastHeartbeat == nil {
		return nil
	}
	t := m.LastHeartbeat.Add(s.machinePolicy(m).heartbeatDuration())
	return &t
}

// machineDeadline is the instant a dead machine's revive window is
// measured from.
func (s *Server) machineDeadline(m *machine) time.Time {
	if n := s.machineNext(m); n != nil {
		return *n
	}
	return m.Created.Add(s.machinePolicy(m).heartbeatDuration())
}

func (s *Server) processInterval(p *process) time.Duration {
	if m := s.machine(p.MachineID); m != nil {
		return s.machinePolicy(m).heartbeatDuration()
	}
	return 600 * time.Second
}

func (s *Server) processStatus(p *process, now time.Time) string {
	if !p.LastHeartbeat.Add(s.processInterval(p)).Before(now) {
		return statusAlive
	}
	return statusDead
}

// revivable reports whether a resource dead since deadline can still be
// resurrected at now.
func revivable(pol *Policy, deadline, now time.Time) bool {
	w, always := pol.reviveWindow()
	if always {
		return true
	}
	return w >= 0 && !now.After(deadline.Add(w))
}

// cullable reports whether the cull worker destroys a dead resource.
func cullable(pol *Policy, deadline, now time.Time) bool {
	if pol.HeartbeatCullStrategy == "KEEP_DEAD" {
		return false
	}
	if w, always := pol.reviveWindow(); always || (w >= 0 && !now.After(deadline.Add(w))) {
		return false
	}
	return true
}

// pingMachine maintains or starts a machine's heartbeat.
func (s *Server) pingMachine(m *machine, now time.Time) (resurrected bool, err *apiError) {
	if s.machineStatus(m, now) == statusDead {
		// machine.rb resurrection_period_passed?: a machine that never
		// pinged cannot be revived (only ALWAYS_REVIVE can).
		pol := s.machinePolicy(m)
		_, always := pol.reviveWindow()
		if (m.LastHeartbeat == nil && !always) || !revivable(pol, s.machineDeadline(m), now) {
			return false, unprocessableEntity("is dead", "MACHINE_HEARTBEAT_DEAD")
		}
		resurrected = true
	}
	t := now.UTC()
	m.LastHeartbeat = &t
	m.Updated = t
	return resurrected, nil
}

// pingProcess maintains a process's heartbeat; resurrected reports a revive.
func (s *Server) pingProcess(p *process, now time.Time) (resurrected bool, err *apiError) {
	if s.processStatus(p, now) == statusDead {
		m := s.machine(p.MachineID)
		pol := s.machinePolicy(m)
		if !revivable(pol, p.LastHeartbeat.Add(s.processInterval(p)), now) {
			return false, unprocessableEntity("is dead", "PROCESS_HEARTBEAT_DEAD")
		}
		resurrected = true
	}
	p.LastHeartbeat = now.UTC()
	p.Updated = p.LastHeartbeat
	return resurrected, nil
}

// Cull runs one pass of Keygen's CullDeadMachinesWorker and
// CullDeadProcessesWorker on the server's clock.
func (s *Server) Cull() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var deadMachines, deadProcs []string
	for _, m := range s.machines {
		if s.machineStatus(m, now) != statusDead {
			continue
		}
		if cullable(s.machinePolicy(m), s.machineDeadline(m), now) {
			deadMachines = append(deadMachines, m.ID)
		}
	}
	for _, id := range deadMachines {
		s.deleteMachine(id)
	}
	for _, p := range s.processes {
		if s.processStatus(p, now) != statusDead {
			continue
		}
		m := s.machine(p.MachineID)
		if cullable(s.machinePolicy(m), p.LastHeartbeat.Add(s.processInterval(p)), now) {
			deadProcs = append(deadProcs, p.ID)
		}
	}
	for _, id := range deadProcs {
		s.deleteProcess(id)
	}
	if len(deadMachines)+len(deadProcs) > 0 {
		s.log.Debug("culled", "machines", len(deadMachines), "processes", len(deadProcs))
	}
}
