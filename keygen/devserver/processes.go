package devserver

import (
	"fmt"
	"net/http"
)

// processLimit checks maxProcesses for a new process on m (keygen-api app/models/machine_process.rb):
// existing rows (dead ones too, until culled) + 1 against the limit of the
// policy's leasing strategy, with overage.
func (s *Server) processLimit(l *License, m *machine) *apiError {
	pol := s.licensePolicy(l)
	var (
		scope = "machine"
		limit = firstInt(m.MaxProcesses, s.maxProcesses(l))
		count int
	)
	switch pol.ProcessLeasingStrategy {
	case "PER_LICENSE":
		scope, limit = "license", s.maxProcesses(l)
		for _, x := range s.machinesOf(l.ID) {
			count += len(s.processesOf(x.ID))
		}
	case "PER_USER":
		scope, limit = "user", s.maxProcesses(l)
		for _, x := range s.machinesOf(l.ID) {
			if x.OwnerID == m.OwnerID {
				count += len(s.processesOf(x.ID))
			}
		}
	default:
		count = len(s.processesOf(m.ID))
	}
	if limit != nil && pol.exceeds(count+1, *limit) {
		return unprocessable("/data", fmt.Sprintf("process count has exceeded maximum allowed for %s (%d)", scope, *limit), "MACHINE_PROCESS_LIMIT_EXCEEDED")
	}
	return nil
}

func (c *call) hSpawn() (*reply, error) {
	s := c.s
	if err := c.need(); err != nil {
		return nil, err
	}
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	d, err := doc.need("processes")
	if err != nil {
		return nil, err
	}
	pid, err := d.str("pid")
	if err != nil {
		return nil, err
	}
	if pid == "" {
		// typed_params (pid has no allow_blank): a parameter error.
		return nil, badRequest("cannot be blank", "").pointer("/data/attributes/pid")
	}
	md, err := d.metadata()
	if err != nil {
		return nil, err
	}
	mid, err := d.relID("machine")
	if err != nil {
		return nil, err
	}
	m := s.machine(mid)
	if m == nil {
		return nil, unprocessable("/data/relationships/machine", "must exist", "MACHINE_NOT_FOUND")
	}
	if !c.canMachine(m, true) {
		return nil, forbidden()
	}
	if err := c.can("process.create"); err != nil {
		return nil, err
	}
	switch {
	case pid == "":
		return nil, badRequest("cannot be blank", "").pointer("/data/attributes/pid")
	case len(pid) > 4096:
		return nil, unprocessable("/data/attributes/pid", "is too long (maximum is 4096 characters)", "PID_TOO_LONG")
	}
	for _, p := range s.processesOf(m.ID) {
		if p.PID == pid {
			return nil, unprocessable("/data/attributes/pid", "has already been taken", "PID_TAKEN")
		}
	}
	if err := s.processLimit(s.license(m.LicenseID), m); err != nil {
		return nil, err
	}
	now := c.now.UTC()
	p := &process{ID: newID(), PID: pid, MachineID: m.ID, Metadata: cloneMap(md), LastHeartbeat: now, Created: now, Updated: now}
	s.processes = append(s.processes, p)
	return &reply{status: 201, body: data(s.renderProcess(p, c.now, "")), header: http.Header{"Location": {s.link("processes", p.ID)}}}, nil
}

// findProcess resolves a process by UUID (no alias).
// findProcess resolves a process by UUID (no alias) among those the
// bearer may see: another license's process is 404, as Keygen scopes the
// lookup by the bearer.
func (c *call) findProcess(id string, manage bool, perms ...string) (*process, *apiError) {
	if err := c.need(); err != nil {
		return nil, err
	}
	p := c.s.process(id)
	var m *machine
	if p != nil {
		m = c.s.machine(p.MachineID)
	}
	if m == nil || !c.canLicense(c.s.license(m.LicenseID)) {
		return nil, notFound("process")
	}
	if !c.canMachine(m, manage) {
		return nil, forbidden()
	}
	if err := c.can(perms...); err != nil {
		return nil, err
	}
	return p, nil
}

func (c *call) hProcess() (*reply, error) {
	p, err := c.findProcess(c.r.PathValue("id"), false, "process.read")
	if err != nil {
		return nil, err
	}
	return ok(data(c.s.renderProcess(p, c.now, "")))
}

func (c *call) hProcessPing() (*reply, error) {
	p, err := c.findProcess(c.r.PathValue("id"), true, "process.heartbeat.ping")
	if err != nil {
		return nil, err
	}
	resurrected, perr := c.s.pingProcess(p, c.now)
	if perr != nil {
		return nil, perr
	}
	override := ""
	if resurrected {
		override = statusResurrected
	}
	return ok(data(c.s.renderProcess(p, c.now, override)))
}

func (c *call) hKill() (*reply, error) {
	p, err := c.findProcess(c.r.PathValue("id"), true, "process.delete")
	if err != nil {
		return nil, err
	}
	c.s.deleteProcess(p.ID)
	return noContent()
}

func (c *call) hProcesses() (*reply, error) {
	if err := c.need(); err != nil {
		return nil, err
	}
	if err := c.can("process.read"); err != nil {
		return nil, err
	}
	q := c.r.URL.Query()
	var out []*process
	for _, p := range c.s.processes {
		m := c.s.machine(p.MachineID)
		if m == nil || !c.canMachine(m, false) {
			continue
		}
		if v := q.Get("machine"); v != "" && m.ID != v && m.Fingerprint != v {
			continue
		}
		if v := q.Get("license"); v != "" && m.LicenseID != v {
			continue
		}
		out = append(out, p)
	}
	return ok(page(c, out, func(p *process) obj { return c.s.renderProcess(p, c.now, "") }))
}

func (c *call) hMachineProcesses() (*reply, error) {
	m, err := c.findMachine(c.r.PathValue("id"), false, "process.read")
	if err != nil {
		return nil, err
	}
	return ok(page(c, c.s.processesOf(m.ID), func(p *process) obj { return c.s.renderProcess(p, c.now, "") }))
}
