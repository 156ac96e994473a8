package devserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// findMachine resolves a machine by id or fingerprint among those the
// bearer may see, then checks the bearer's permissions. Keygen scopes the
// lookup by the bearer first (authorized_scope in the machines
// controllers), so another license's machine is 404, not 403; a user
// bearer managing a machine of a protected policy is 403.
func (c *call) findMachine(idOrFP string, manage bool, perms ...string) (*machine, *apiError) {
	if err := c.need(); err != nil {
		return nil, err
	}
	var found *machine
	if m := c.s.machine(idOrFP); m != nil && c.canLicense(c.s.license(m.LicenseID)) {
		found = m
	}
	for _, m := range c.s.machines {
		if found == nil && m.Fingerprint == idOrFP && c.canLicense(c.s.license(m.LicenseID)) {
			found = m
		}
	}
	if found == nil {
		return nil, notFound("machine")
	}
	if !c.canMachine(found, manage) {
		return nil, forbidden()
	}
	if err := c.can(perms...); err != nil {
		return nil, err
	}
	return found, nil
}

// findLicense resolves a license by id or key among those the bearer may
// see (404 otherwise, as Keygen's scoped lookup), then checks permissions.
func (c *call) findLicense(idOrKey string, perms ...string) (*License, *apiError) {
	if err := c.need(); err != nil {
		return nil, err
	}
	l := c.s.licenseByIDOrKey(idOrKey)
	if l == nil || !c.canLicense(l) {
		return nil, notFound("license")
	}
	if err := c.can(perms...); err != nil {
		return nil, err
	}
	return l, nil
}

type compParams struct {
	Fingerprint, Name string
	Metadata          map[string]any
}

// parseComponents reads relationships.components.data[] of an activation.
func parseComponents(d *reqData) ([]compParams, *apiError) {
	r, ok := d.Relationships["components"]
	if !ok || jsonKind(r.Data) == "null" || len(r.Data) == 0 {
		return nil, nil
	}
	if k := jsonKind(r.Data); k != "array" {
		return nil, typeMismatch("/data/relationships/components/data", k, "array")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(r.Data, &items); err != nil {
		return nil, typeMismatch("/data/relationships/components/data", "invalid", "array")
	}
	if len(items) > 20 {
		return nil, unprocessable("/data/relationships/components", "too many records (maximum is 20)", "COMPONENTS_TOO_MANY")
	}
	out := make([]compParams, 0, len(items))
	seen := map[string]bool{}
	for i, raw := range items {
		ptr := "/data/relationships/components/data/" + strconv.Itoa(i)
		if k := jsonKind(raw); k != "object" {
			return nil, typeMismatch(ptr, k, "object")
		}
		var cd reqData
		if err := json.Unmarshal(raw, &cd); err != nil {
			return nil, typeMismatch(ptr, "invalid", "object")
		}
		fp, err := cd.str("fingerprint")
		if err != nil {
			return nil, reprefix(err, ptr)
		}
		name, err := cd.str("name")
		if err != nil {
			return nil, reprefix(err, ptr)
		}
		md, err := cd.metadata()
		if err != nil {
			return nil, reprefix(err, ptr)
		}
		switch {
		case fp == "":
			return nil, badRequest("cannot be blank", "").pointer(ptr + "/attributes/fingerprint")
		case len(fp) > 4096:
			return nil, unprocessable(ptr+"/attributes/fingerprint", "is too long (maximum is 4096 characters)", "COMPONENTS_FINGERPRINT_TOO_LONG")
		case name == "":
			return nil, badRequest("cannot be blank", "").pointer(ptr + "/attributes/name")
		case len(name) > 255:
			return nil, unprocessable(ptr+"/attributes/name", "is too long (maximum is 255 characters)", "COMPONENTS_NAME_TOO_LONG")
		case seen[fp]:
			return nil, unprocessable(ptr+"/attributes/fingerprint", "is duplicated", "COMPONENTS_FINGERPRINT_CONFLICT")
		}
		seen[fp] = true
		out = append(out, compParams{Fingerprint: fp, Name: name, Metadata: md})
	}
	return out, nil
}

func reprefix(e *apiError, prefix string) *apiError {
	if p, ok := e.Source["pointer"]; ok {
		e.Source["pointer"] = prefix + p[len("/data"):]
	}
	return e
}

// componentTaken checks a component fingerprint against the policy's
// uniqueness strategy; machineID is the machine it will join ("" for a new
// machine of license l).
func (s *Server) componentTaken(l *License, machineID, fp string) (string, bool) {
	strategy := s.licensePolicy(l).ComponentUniquenessStrategy
	for _, c := range s.components {
		if c.Fingerprint != fp {
			continue
		}
		m := s.machine(c.MachineID)
		if m == nil {
			continue
		}
		if detail, taken := uniquenessClash(strategy, l, s.license(m.LicenseID), m.LicenseID, m.ID == machineID); taken {
			return detail, true
		}
	}
	return "", false
}

// fingerprintTaken applies machineUniquenessStrategy.
func (s *Server) fingerprintTaken(l *License, fp string) (string, bool) {
	strategy := s.licensePolicy(l).MachineUniquenessStrategy
	for _, m := range s.machines {
		if m.Fingerprint != fp {
			continue
		}
		if detail, taken := uniquenessClash(strategy, l, s.license(m.LicenseID), m.LicenseID, false); taken {
			return detail, true
		}
	}
	return "", false
}

// uniquenessClash applies a UNIQUE_PER_* strategy to an existing row with
// the same fingerprint, held by license ml (id mlID) and, for components,
// on the same machine or not: Keygen's error detail and whether it clashes.
func uniquenessClash(strategy string, l, ml *License, mlID string, sameMachine bool) (string, bool) {
	switch strategy {
	case "UNIQUE_PER_MACHINE":
		return "has already been taken", sameMachine
	case "UNIQUE_PER_LICENSE":
		return "has already been taken", mlID == l.ID
	case "UNIQUE_PER_POLICY":
		return "has already been taken for this policy", ml != nil && ml.PolicyID == l.PolicyID
	case "UNIQUE_PER_PRODUCT":
		return "has already been taken for this product", ml != nil && ml.ProductID == l.ProductID
	case "UNIQUE_PER_ACCOUNT":
		return "has already been taken for this account", true
	}
	return "", false
}

func (c *call) hActivate() (*reply, error) {
	s := c.s
	if err := c.need(); err != nil {
		return nil, err
	}
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	d, err := doc.need("machines")
	if err != nil {
		return nil, err
	}
	m := &machine{}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"fingerprint", &m.Fingerprint}, {"name", &m.Name}, {"hostname", &m.Hostname}, {"platform", &m.Platform}, {"ip", &m.IP}} {
		name, dst := f.name, f.dst
		v, err := d.str(name)
		if err != nil {
			return nil, err
		}
		*dst = v
		if name != "fingerprint" && len(v) > 255 {
			return nil, unprocessable("/data/attributes/"+name, "is too long (maximum is 255 characters)", snake(name)+"_TOO_LONG")
		}
	}
	if m.Fingerprint == "" {
		// typed_params (fingerprint has no allow_blank): a parameter error,
		// before any lookup or validation (machines_controller.rb).
		return nil, badRequest("cannot be blank", "").pointer("/data/attributes/fingerprint")
	}
	if m.Cores, err = d.intp("cores"); err != nil {
		return nil, err
	}
	if m.Cores != nil && (*m.Cores < 1 || *m.Cores > 1<<31-1) {
		return nil, unprocessable("/data/attributes/cores", "must be greater than or equal to 1", "CORES_INVALID")
	}
	if m.Memory, err = d.int64p("memory"); err != nil {
		return nil, err
	}
	if m.Disk, err = d.int64p("disk"); err != nil {
		return nil, err
	}
	if m.Memory != nil && *m.Memory < 1 {
		return nil, unprocessable("/data/attributes/memory", "must be greater than or equal to 1", "MEMORY_INVALID")
	}
	if m.Disk != nil && *m.Disk < 1 {
		return nil, unprocessable("/data/attributes/disk", "must be greater than or equal to 1", "DISK_INVALID")
	}
	if m.Metadata, err = d.metadata(); err != nil {
		return nil, err
	}
	licID, err := d.relID("license")
	if err != nil {
		return nil, err
	}
	l := s.license(licID)
	if l == nil {
		return nil, unprocessable("/data/relationships/license", "must exist", "LICENSE_NOT_FOUND")
	}
	if !c.canLicense(l) {
		return nil, forbidden()
	}
	pol := s.licensePolicy(l)
	if c.auth.kind == "user" && pol.Protected {
		return nil, forbidden()
	}
	if m.OwnerID, err = d.relID("owner"); err != nil {
		return nil, err
	}
	if m.OwnerID != "" && m.OwnerID != l.OwnerID && !containsStr(l.UserIDs, m.OwnerID) {
		return nil, unprocessable("/data/relationships/owner", "must be a valid user of license", "OWNER_INVALID")
	}
	comps, err := parseComponents(d)
	if err != nil {
		return nil, err
	}
	perms := []string{"machine.create"}
	if len(comps) > 0 {
		perms = append(perms, "component.create") // machine_policy.rb permissions_for_create
	}
	if err := c.can(perms...); err != nil {
		return nil, err
	}
	switch {
	case len(m.Fingerprint) > 4096:
		return nil, unprocessable("/data/attributes/fingerprint", "is too long (maximum is 4096 characters)", "FINGERPRINT_TOO_LONG")
	case m.Fingerprint == "action" || m.Fingerprint == "actions":
		return nil, unprocessable("/data/attributes/fingerprint", "is reserved", "FINGERPRINT_NOT_ALLOWED")
	case s.machine(m.Fingerprint) != nil:
		return nil, unprocessable("/data/attributes/fingerprint", "must not conflict with another machine's identifier (UUID)", "FINGERPRINT_CONFLICT")
	}
	if detail, taken := s.fingerprintTaken(l, m.Fingerprint); taken {
		return nil, unprocessable("/data/attributes/fingerprint", detail, "FINGERPRINT_TAKEN")
	}
	for i, cp := range comps {
		if detail, taken := s.componentTaken(l, "", cp.Fingerprint); taken && pol.ComponentUniquenessStrategy != "UNIQUE_PER_MACHINE" {
			return nil, unprocessable(fmt.Sprintf("/data/relationships/components/data/%d/attributes/fingerprint", i), detail, "COMPONENTS_FINGERPRINT_TAKEN")
		}
	}
	if err := s.machineLimits(l, m); err != nil {
		return nil, err
	}
	m.ID = d.ID
	if m.ID == "" {
		m.ID = newID()
	} else if !isUUID(m.ID) || s.machine(m.ID) != nil {
		return nil, newError(409, "must be a unique UUID", "ID_CONFLICT").pointer("/data/id")
	}
	if err := c.countActivation(); err != nil {
		return nil, err
	}
	now := c.now.UTC()
	m.LicenseID, m.Created, m.Updated = l.ID, now, now
	if pol.HeartbeatBasis == "FROM_CREATION" {
		m.LastHeartbeat = &now
	}
	s.machines = append(s.machines, m)
	for _, cp := range comps {
		s.components = append(s.components, &component{ID: newID(), Fingerprint: cp.Fingerprint, Name: cp.Name, Metadata: cloneMap(cp.Metadata), MachineID: m.ID, Created: now, Updated: now})
	}
	return &reply{status: 201, body: data(s.renderMachine(m, c.now, "")), header: http.Header{"Location": {s.link("machines", m.ID)}}}, nil
}

// countActivation and countDeactivation count a machine created or
// deleted with a license (activation) token against its limits, as
// keygen-api's machines_controller.rb does: past maxActivations the
// token's update fails validation (token.rb: "exceeds maximum allowed").
func (c *call) countActivation() *apiError {
	t := c.activationToken()
	if t == nil {
		return nil
	}
	if t.MaxActivations != nil && t.Activations+1 > *t.MaxActivations {
		return unprocessable("/data/attributes/activations", fmt.Sprintf("exceeds maximum allowed (%d)", *t.MaxActivations), "ACTIVATIONS_LIMIT_EXCEEDED")
	}
	t.Activations++
	return nil
}

func (c *call) countDeactivation() *apiError {
	t := c.activationToken()
	if t == nil {
		return nil
	}
	if t.MaxDeactivations != nil && t.Deactivations+1 > *t.MaxDeactivations {
		return unprocessable("/data/attributes/deactivations", fmt.Sprintf("exceeds maximum allowed (%d)", *t.MaxDeactivations), "DEACTIVATIONS_LIMIT_EXCEEDED")
	}
	t.Deactivations++
	return nil
}

func (c *call) activationToken() *token {
	if c.auth == nil || c.auth.tok == nil || c.auth.tok.Kind != "license" {
		return nil
	}
	return c.auth.tok
}

func containsStr(xs []string, v string) bool {
	for _, x := range xs {
		if x == v {
			return true
		}
	}
	return false
}

// machineLimits enforces machine, core, memory and disk limits at
// activation (keygen-api app/models/machine.rb).
func (s *Server) machineLimits(l *License, m *machine) *apiError {
	pol := s.licensePolicy(l)
	scope := "license"
	peers := s.machinesOf(l.ID)
	if pol.MachineLeasingStrategy == "PER_USER" {
		// machine.rb: machines of the same owner, "nil owner is
		// significant" (unowned machines are their own group).
		scope = "user"
		var mine []*machine
		for _, x := range peers {
			if x.OwnerID == m.OwnerID {
				mine = append(mine, x)
			}
		}
		peers = mine
	}
	if limit := s.maxMachines(l); limit != nil && len(peers) > 0 && pol.exceeds(len(peers)+1, *limit) {
		return unprocessable("/data", fmt.Sprintf("machine count has exceeded maximum allowed for %s (%d)", scope, *limit), "MACHINE_LIMIT_EXCEEDED")
	}
	var cores int
	var mem, disk int64
	for _, x := range peers {
		if x.Cores != nil {
			cores += *x.Cores
		}
		if x.Memory != nil {
			mem += *x.Memory
		}
		if x.Disk != nil {
			disk += *x.Disk
		}
	}
	if limit := s.maxCores(l); limit != nil && m.Cores != nil && pol.exceeds(cores+*m.Cores, *limit) {
		return unprocessable("/data", fmt.Sprintf("machine core count has exceeded maximum allowed for %s (%d)", scope, *limit), "MACHINE_CORE_LIMIT_EXCEEDED")
	}
	if pol.MaxMemory != nil && m.Memory != nil && float64(mem+*m.Memory) > float64(*pol.MaxMemory)*overage(pol) {
		return unprocessable("/data", fmt.Sprintf("machine memory count has exceeded maximum allowed for %s (%d)", scope, *pol.MaxMemory), "MACHINE_MEMORY_LIMIT_EXCEEDED")
	}
	if pol.MaxDisk != nil && m.Disk != nil && float64(disk+*m.Disk) > float64(*pol.MaxDisk)*overage(pol) {
		return unprocessable("/data", fmt.Sprintf("machine disk count has exceeded maximum allowed for %s (%d)", scope, *pol.MaxDisk), "MACHINE_DISK_LIMIT_EXCEEDED")
	}
	return nil
}

func overage(p *Policy) float64 {
	if f := p.overageFactor(); f > 0 {
		return f
	}
	return 1e300
}

func (c *call) hMachine() (*reply, error) {
	m, err := c.findMachine(c.r.PathValue("id"), false, "machine.read")
	if err != nil {
		return nil, err
	}
	return ok(data(c.s.renderMachine(m, c.now, "")))
}

// hUpdateMachine serves PATCH /machines/{id}: name, hostname, platform,
// metadata, and (admin or product only) maxProcesses.
func (c *call) hUpdateMachine() (*reply, error) {
	m, err := c.findMachine(c.r.PathValue("id"), true, "machine.update")
	if err != nil {
		return nil, err
	}
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	d, err := doc.need("machines")
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"name", &m.Name}, {"hostname", &m.Hostname}, {"platform", &m.Platform}, {"ip", &m.IP}} {
		if _, has := d.Attributes[f.name]; !has {
			continue
		}
		v, err := d.str(f.name)
		if err != nil {
			return nil, err
		}
		if len(v) > 255 {
			return nil, unprocessable("/data/attributes/"+f.name, "is too long (maximum is 255 characters)", snake(f.name)+"_TOO_LONG")
		}
		*f.dst = v
	}
	if _, has := d.Attributes["maxProcesses"]; has {
		if c.auth.kind != "admin" && c.auth.kind != "product" {
			return nil, forbidden()
		}
		v, err := d.intp("maxProcesses")
		if err != nil {
			return nil, err
		}
		if v != nil && *v < 1 {
			return nil, unprocessable("/data/attributes/maxProcesses", "must be greater than 0", "MAX_PROCESSES_INVALID")
		}
		m.MaxProcesses = v
	}
	if _, has := d.Attributes["metadata"]; has {
		md, err := d.metadata()
		if err != nil {
			return nil, err
		}
		m.Metadata = md
	}
	m.Updated = c.now.UTC()
	return ok(data(c.s.renderMachine(m, c.now, "")))
}

func (c *call) hDeactivate() (*reply, error) {
	m, err := c.findMachine(c.r.PathValue("id"), true, "machine.delete")
	if err != nil {
		return nil, err
	}
	if err := c.countDeactivation(); err != nil {
		return nil, err
	}
	c.s.deleteMachine(m.ID)
	return noContent()
}

func (c *call) hMachinePing() (*reply, error) {
	m, err := c.findMachine(c.r.PathValue("id"), true, "machine.heartbeat.ping")
	if err != nil {
		return nil, err
	}
	resurrected, perr := c.s.pingMachine(m, c.now)
	if perr != nil {
		return nil, perr
	}
	override := ""
	if resurrected {
		override = statusResurrected
	}
	return ok(data(c.s.renderMachine(m, c.now, override)))
}

func (c *call) hMachineReset() (*reply, error) {
	m, err := c.findMachine(c.r.PathValue("id"), true, "machine.heartbeat.reset")
	if err != nil {
		return nil, err
	}
	if c.auth.kind != "admin" && c.auth.kind != "product" {
		return nil, forbidden()
	}
	m.LastHeartbeat = nil
	m.Updated = c.now.UTC()
	return ok(data(c.s.renderMachine(m, c.now, "")))
}

func (c *call) visibleMachines() []*machine {
	var out []*machine
	for _, m := range c.s.machines {
		if c.canMachine(m, false) {
			out = append(out, m)
		}
	}
	return out
}

func (c *call) hMachines() (*reply, error) {
	if err := c.need(); err != nil {
		return nil, err
	}
	if err := c.can("machine.read"); err != nil {
		return nil, err
	}
	q := c.r.URL.Query()
	var out []*machine
	for _, m := range c.visibleMachines() {
		l := c.s.license(m.LicenseID)
		if v := q.Get("license"); v != "" && m.LicenseID != v && (l == nil || l.Key != v) {
			continue
		}
		if v := q.Get("fingerprint"); v != "" && m.Fingerprint != v {
			continue
		}
		if v := q.Get("user"); v != "" && m.OwnerID != v {
			continue
		}
		if v := q.Get("owner"); v != "" && m.OwnerID != v {
			continue
		}
		if v := q.Get("product"); v != "" && (l == nil || l.ProductID != v) {
			continue
		}
		if v := q.Get("policy"); v != "" && (l == nil || l.PolicyID != v) {
			continue
		}
		out = append(out, m)
	}
	return ok(page(c, out, func(m *machine) obj { return c.s.renderMachine(m, c.now, "") }))
}

func (c *call) hLicenseMachines() (*reply, error) {
	l, err := c.findLicense(c.r.PathValue("id"), "machine.read")
	if err != nil {
		return nil, err
	}
	return ok(page(c, c.s.machinesOf(l.ID), func(m *machine) obj { return c.s.renderMachine(m, c.now, "") }))
}

// Components.

func (c *call) hMachineComponents() (*reply, error) {
	m, err := c.findMachine(c.r.PathValue("id"), false, "component.read")
	if err != nil {
		return nil, err
	}
	return ok(page(c, c.s.componentsOf(m.ID), c.s.renderComponent))
}

func (c *call) hComponents() (*reply, error) {
	if err := c.need(); err != nil {
		return nil, err
	}
	if err := c.can("component.read"); err != nil {
		return nil, err
	}
	mid := c.r.URL.Query().Get("machine")
	var out []*component
	for _, cp := range c.s.components {
		m := c.s.machine(cp.MachineID)
		if m == nil || !c.canMachine(m, false) || (mid != "" && m.ID != mid && m.Fingerprint != mid) {
			continue
		}
		if v := c.r.URL.Query().Get("license"); v != "" && m.LicenseID != v {
			continue
		}
		out = append(out, cp)
	}
	return ok(page(c, out, c.s.renderComponent))
}

func (c *call) findComponent(id string, manage bool, perms ...string) (*component, *apiError) {
	if err := c.need(); err != nil {
		return nil, err
	}
	cp := c.s.component(id)
	var m *machine
	if cp != nil {
		m = c.s.machine(cp.MachineID)
	}
	if m == nil || !c.canLicense(c.s.license(m.LicenseID)) {
		return nil, notFound("component")
	}
	if !c.canMachine(m, manage) {
		return nil, forbidden()
	}
	if err := c.can(perms...); err != nil {
		return nil, err
	}
	return cp, nil
}

func (c *call) hComponent() (*reply, error) {
	cp, err := c.findComponent(c.r.PathValue("id"), false, "component.read")
	if err != nil {
		return nil, err
	}
	return ok(data(c.s.renderComponent(cp)))
}

func (c *call) hDeleteComponent() (*reply, error) {
	cp, err := c.findComponent(c.r.PathValue("id"), true, "component.delete")
	if err != nil {
		return nil, err
	}
	c.s.components = deleteWhere(c.s.components, func(x *component) bool { return x.ID == cp.ID })
	return noContent()
}

func (c *call) hUpdateComponent() (*reply, error) {
	cp, err := c.findComponent(c.r.PathValue("id"), true, "component.update")
	if err != nil {
		return nil, err
	}
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	d, err := doc.need("components")
	if err != nil {
		return nil, err
	}
	if _, ok := d.Attributes["name"]; ok {
		name, err := d.str("name")
		if err != nil {
			return nil, err
		}
		if name == "" {
			return nil, unprocessable("/data/attributes/name", "can't be blank", "NAME_BLANK")
		}
		cp.Name = name
	}
	if _, ok := d.Attributes["metadata"]; ok {
		md, err := d.metadata()
		if err != nil {
			return nil, err
		}
		cp.Metadata = md
	}
	cp.Updated = c.now.UTC()
	return ok(data(c.s.renderComponent(cp)))
}

func (c *call) hAddComponent() (*reply, error) {
	if err := c.need(); err != nil {
		return nil, err
	}
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	d, err := doc.need("components")
	if err != nil {
		return nil, err
	}
	fp, err := d.str("fingerprint")
	if err != nil {
		return nil, err
	}
	name, err := d.str("name")
	if err != nil {
		return nil, err
	}
	md, err := d.metadata()
	if err != nil {
		return nil, err
	}
	mid, err := d.relID("machine")
	if err != nil {
		return nil, err
	}
	m := c.s.machine(mid)
	if m == nil {
		return nil, unprocessable("/data/relationships/machine", "must exist", "MACHINE_NOT_FOUND")
	}
	if !c.canMachine(m, true) {
		return nil, forbidden()
	}
	if err := c.can("component.create"); err != nil {
		return nil, err
	}
	switch {
	case fp == "":
		return nil, badRequest("cannot be blank", "").pointer("/data/attributes/fingerprint")
	case len(fp) > 4096:
		return nil, unprocessable("/data/attributes/fingerprint", "is too long (maximum is 4096 characters)", "FINGERPRINT_TOO_LONG")
	case name == "":
		return nil, badRequest("cannot be blank", "").pointer("/data/attributes/name")
	case len(name) > 255:
		return nil, unprocessable("/data/attributes/name", "is too long (maximum is 255 characters)", "NAME_TOO_LONG")
	}
	l := c.s.license(m.LicenseID)
	if detail, taken := c.s.componentTaken(l, m.ID, fp); taken {
		return nil, unprocessable("/data/attributes/fingerprint", detail, "FINGERPRINT_TAKEN")
	}
	now := c.now.UTC()
	cp := &component{ID: newID(), Fingerprint: fp, Name: name, Metadata: cloneMap(md), MachineID: m.ID, Created: now, Updated: now}
	c.s.components = append(c.s.components, cp)
	return &reply{status: 201, body: data(c.s.renderComponent(cp)), header: http.Header{"Location": {c.s.link("components", cp.ID)}}}, nil
}

func deleteWhere[T any](xs []T, f func(T) bool) []T {
	out := xs[:0]
	for _, x := range xs {
		if !f(x) {
			out = append(out, x)
		}
	}
	clear(xs[len(out):])
	return out
}
