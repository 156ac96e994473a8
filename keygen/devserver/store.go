package devserver

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// CreateProduct creates a product.
func (s *Server) CreateProduct(name string) Product {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *s.createProduct(name, nil)
}

func (s *Server) createProduct(name string, md map[string]any) *Product {
	p := &Product{ID: newID(), Name: name, Metadata: cloneMap(md), Created: s.now().UTC()}
	s.products = append(s.products, p)
	return p
}

// CreatePolicy creates a policy; zero attributes take Keygen's defaults. It
// panics on invalid attribute values (use the HTTP API for validation
// errors).
func (s *Server) CreatePolicy(spec PolicySpec) Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.createPolicy(spec)
	if err != nil {
		panic("devserver: CreatePolicy: " + err.Error())
	}
	return *p
}

func (s *Server) createPolicy(spec PolicySpec) (*Policy, *apiError) {
	if spec.ProductID == "" {
		if len(s.products) == 0 {
			s.createProduct("Product", nil)
		}
		spec.ProductID = s.products[0].ID
	} else if s.product(spec.ProductID) == nil {
		return nil, unprocessable("/data/relationships/product", "must exist", "PRODUCT_NOT_FOUND")
	}
	if err := spec.normalize(); err != nil {
		return nil, err
	}
	p := &Policy{ID: newID(), Created: s.now().UTC(), PolicySpec: spec}
	s.policies = append(s.policies, p)
	return p, nil
}

// CreateUser creates a user that can own licenses and machines.
func (s *Server) CreateUser(email string) User {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := &User{ID: newID(), Email: email, Created: s.now().UTC()}
	s.users = append(s.users, u)
	return *u
}

// BanUser bans or unbans a user (its licenses validate as BANNED).
func (s *Server) BanUser(id string, banned bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.user(id); u != nil {
		u.Banned = banned
	}
}

// CreateLicense creates a license. It panics if the policy does not exist.
func (s *Server) CreateLicense(spec LicenseSpec) License {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.createLicense(spec)
	if err != nil {
		panic("devserver: CreateLicense: " + err.Error())
	}
	return *l
}

func (s *Server) createLicense(spec LicenseSpec) (*License, *apiError) {
	pol := s.policy(spec.PolicyID)
	if pol == nil {
		return nil, unprocessable("/data/relationships/policy", "must exist", "POLICY_NOT_FOUND")
	}
	if spec.Key != "" && s.licenseByKey(spec.Key) != nil {
		return nil, unprocessable("/data/attributes/key", "has already been taken", "KEY_TAKEN")
	}
	for _, uid := range append([]string{spec.OwnerID}, spec.UserIDs...) {
		if uid != "" && s.user(uid) == nil {
			return nil, unprocessable("/data/relationships/owner", "must exist", "OWNER_NOT_FOUND")
		}
	}
	perms, perr := s.licensePermsFor(spec.Permissions)
	if perr != nil {
		return nil, perr
	}
	now := s.now().UTC()
	l := &License{
		Permissions: perms,
		ID:          newID(), Name: spec.Name, PolicyID: pol.ID, ProductID: pol.ProductID,
		Expiry: spec.Expiry, Suspended: spec.Suspended,
		MaxMachines: spec.MaxMachines, MaxProcesses: spec.MaxProcesses, MaxCores: spec.MaxCores,
		MaxUsers: spec.MaxUsers, MaxUses: spec.MaxUses,
		OwnerID: spec.OwnerID, UserIDs: slices.Clone(spec.UserIDs),
		Metadata: cloneMap(spec.Metadata), Created: now, Updated: now,
	}
	if pol.RequireCheckIn {
		// license.rb before_create :set_first_check_in: the check-in clock
		// starts at creation, so nextCheckIn is set from the start.
		t := now
		l.LastCheckIn = &t
	}
	if l.Expiry == nil && pol.Duration != nil {
		e := now.Add(time.Duration(*pol.Duration) * time.Second)
		l.Expiry = &e
	}
	l.Key = spec.Key
	if l.Key == "" {
		l.Key = s.keys.licenseKey(pol.Scheme, s.account, pol.ProductID, pol, l)
	}
	s.licenses = append(s.licenses, l)
	return l, nil
}

// UpdateLicense applies f to the stored license (suspend, change expiry or
// limits, ...).
func (s *Server) UpdateLicense(id string, f func(*License)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.license(id)
	if l == nil {
		panic("devserver: UpdateLicense: no license " + id)
	}
	f(l)
	l.Updated = s.now().UTC()
}

// LockUses stands for another request (say, another machine's
// increment) holding license id's row: until unlock is called, its
// increment-usage and decrement-usage answer as Keygen's do when their
// `with_lock 'FOR UPDATE NOWAIT'` finds the row locked (uses_controller.rb):
// 409 "failed to increment due to another conflicting update", nothing
// counted.
func (s *Server) LockUses(id string) (unlock func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.license(id) == nil {
		panic("devserver: LockUses: no license " + id)
	}
	if s.usesLocked == nil {
		s.usesLocked = map[string]int{}
	}
	s.usesLocked[id]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.usesLocked[id]--; s.usesLocked[id] == 0 {
				delete(s.usesLocked, id)
			}
		})
	}
}

// UpdatePolicy applies f to the stored policy.
func (s *Server) UpdatePolicy(id string, f func(*Policy)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.policy(id)
	if p == nil {
		panic("devserver: UpdatePolicy: no policy " + id)
	}
	f(p)
}

// License returns a copy of a stored license.
func (s *Server) License(id string) (License, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.license(id); l != nil {
		return *l, true
	}
	return License{}, false
}

// CreateEntitlement creates an entitlement.
func (s *Server) CreateEntitlement(code, name string) Entitlement {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.createEntitlement(code, name, nil)
	if err != nil {
		panic("devserver: CreateEntitlement: " + err.Error())
	}
	return *e
}

func (s *Server) createEntitlement(code, name string, md map[string]any) (*Entitlement, *apiError) {
	if code == "" {
		return nil, unprocessable("/data/attributes/code", "cannot be blank", "CODE_BLANK")
	}
	for _, e := range s.entitlements {
		if e.Code == code {
			return nil, unprocessable("/data/attributes/code", "has already been taken", "CODE_TAKEN")
		}
	}
	if name == "" {
		name = code
	}
	e := &Entitlement{ID: newID(), Code: code, Name: name, Metadata: cloneMap(md), Created: s.now().UTC()}
	s.entitlements = append(s.entitlements, e)
	return e, nil
}

// AttachEntitlements attaches entitlements (by code) to a license.
func (s *Server) AttachEntitlements(licenseID string, codes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.attachEntitlements(licenseID, codes); err != nil {
		panic("devserver: AttachEntitlements: " + err.Error())
	}
}

func (s *Server) attachEntitlements(licenseID string, codes []string) *apiError {
	if s.license(licenseID) == nil {
		return notFound("license")
	}
	for _, code := range codes {
		e := s.entitlementByCode(code)
		if e == nil {
			return unprocessable("/data", "entitlement "+code+" must exist", "ENTITLEMENT_NOT_FOUND")
		}
		if !slices.Contains(s.licenseEnts[licenseID], e.ID) {
			s.licenseEnts[licenseID] = append(s.licenseEnts[licenseID], e.ID)
		}
	}
	return nil
}

// CreateToken creates a bearer token: kind "admin" (resourceID ignored),
// "product" (product id), "license" (license id) or "user" (user id).
func (s *Server) CreateToken(kind, resourceID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	prefix := map[string]string{"admin": "admin", "product": "prod", "license": "activ", "user": "user"}[kind]
	if prefix == "" {
		panic("devserver: CreateToken: unknown kind " + kind)
	}
	t := &token{Token: prefix + "-" + randomHex(32) + "v3", ID: newID(), Kind: kind, ResourceID: resourceID, Created: s.now().UTC()}
	s.tokens[t.Token] = t
	return t.Token
}

// CreateLicenseToken issues a license (activation) token as POST
// /licenses/{id}/tokens does, with optional activation and deactivation
// limits. It panics if the license does not exist.
func (s *Server) CreateLicenseToken(licenseID string, maxActivations, maxDeactivations *int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.license(licenseID) == nil {
		panic("devserver: CreateLicenseToken: no license " + licenseID)
	}
	return s.newLicenseToken(licenseID, maxActivations, maxDeactivations).Token
}

// TokenCounts reports a token's activations and deactivations.
func (s *Server) TokenCounts(tok string) (activations, deactivations int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[tok]
	if t == nil {
		return 0, 0, false
	}
	return t.Activations, t.Deactivations, true
}

func (s *Server) newLicenseToken(licenseID string, maxAct, maxDeact *int) *token {
	t := &token{Token: "activ-" + randomHex(32) + "v3", ID: newID(), Kind: "license", ResourceID: licenseID, Created: s.now().UTC()}
	if maxAct != nil {
		t.MaxActivations = intp(*maxAct)
	}
	if maxDeact != nil {
		t.MaxDeactivations = intp(*maxDeact)
	}
	s.tokens[t.Token] = t
	return t
}

// Machines returns snapshots of every machine.
func (s *Server) Machines() []MachineState {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make([]MachineState, 0, len(s.machines))
	for _, m := range s.machines {
		st := MachineState{ID: m.ID, Fingerprint: m.Fingerprint, Name: m.Name, Hostname: m.Hostname, Platform: m.Platform,
			LicenseID: m.LicenseID, OwnerID: m.OwnerID, HeartbeatStatus: s.machineStatus(m, now),
			Metadata: cloneMap(m.Metadata), Created: m.Created}
		if m.Cores != nil {
			st.Cores = *m.Cores
		}
		if m.LastHeartbeat != nil {
			t := *m.LastHeartbeat
			st.LastHeartbeat = &t
		}
		out = append(out, st)
	}
	return out
}

// Components returns snapshots of every component.
func (s *Server) Components() []ComponentState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ComponentState, 0, len(s.components))
	for _, c := range s.components {
		st := ComponentState{ID: c.ID, Fingerprint: c.Fingerprint, Name: c.Name, MachineID: c.MachineID, Metadata: cloneMap(c.Metadata)}
		if m := s.machine(c.MachineID); m != nil {
			st.LicenseID = m.LicenseID
		}
		out = append(out, st)
	}
	return out
}

// Processes returns snapshots of every process.
func (s *Server) Processes() []ProcessState {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make([]ProcessState, 0, len(s.processes))
	for _, p := range s.processes {
		st := ProcessState{ID: p.ID, PID: p.PID, MachineID: p.MachineID, Status: s.processStatus(p, now), LastHeartbeat: p.LastHeartbeat, Metadata: cloneMap(p.Metadata)}
		if m := s.machine(p.MachineID); m != nil {
			st.LicenseID = m.LicenseID
		}
		out = append(out, st)
	}
	return out
}

// lookups (s.mu held)

func (s *Server) product(id string) *Product {
	for _, p := range s.products {
		if p.ID == id {
			return p
		}
	}
	return nil
}

func (s *Server) policy(id string) *Policy {
	for _, p := range s.policies {
		if p.ID == id {
			return p
		}
	}
	return nil
}

func (s *Server) user(id string) *User {
	for _, u := range s.users {
		if u.ID == id || (u.Email != "" && u.Email == id) {
			return u
		}
	}
	return nil
}

func (s *Server) license(id string) *License {
	for _, l := range s.licenses {
		if l.ID == id {
			return l
		}
	}
	return nil
}

func (s *Server) licenseByKey(key string) *License {
	for _, l := range s.licenses {
		if l.Key == key {
			return l
		}
	}
	return nil
}

// licenseByIDOrKey resolves Keygen's license alias (id or key).
func (s *Server) licenseByIDOrKey(v string) *License {
	if l := s.license(v); l != nil {
		return l
	}
	return s.licenseByKey(v)
}

func (s *Server) licensePolicy(l *License) *Policy { return s.policy(l.PolicyID) }

func (s *Server) entitlement(id string) *Entitlement {
	for _, e := range s.entitlements {
		if e.ID == id {
			return e
		}
	}
	return nil
}

func (s *Server) entitlementByCode(code string) *Entitlement {
	for _, e := range s.entitlements {
		if e.Code == code {
			return e
		}
	}
	return nil
}

func (s *Server) licenseEntitlements(licenseID string) []*Entitlement {
	var out []*Entitlement
	for _, id := range s.licenseEnts[licenseID] {
		if e := s.entitlement(id); e != nil {
			out = append(out, e)
		}
	}
	return out
}

func (s *Server) machine(id string) *machine {
	for _, m := range s.machines {
		if m.ID == id {
			return m
		}
	}
	return nil
}

func (s *Server) machinesOf(licenseID string) []*machine {
	var out []*machine
	for _, m := range s.machines {
		if m.LicenseID == licenseID {
			out = append(out, m)
		}
	}
	return out
}

func (s *Server) componentsOf(machineID string) []*component {
	var out []*component
	for _, c := range s.components {
		if c.MachineID == machineID {
			out = append(out, c)
		}
	}
	return out
}

func (s *Server) processesOf(machineID string) []*process {
	var out []*process
	for _, p := range s.processes {
		if p.MachineID == machineID {
			out = append(out, p)
		}
	}
	return out
}

func (s *Server) component(id string) *component {
	for _, c := range s.components {
		if c.ID == id {
			return c
		}
	}
	return nil
}

func (s *Server) process(id string) *process {
	for _, p := range s.processes {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// effective limits: license override, else the policy's.

func (s *Server) maxMachines(l *License) *int {
	return firstInt(l.MaxMachines, s.licensePolicy(l).MaxMachines)
}

func (s *Server) maxProcesses(l *License) *int {
	return firstInt(l.MaxProcesses, s.licensePolicy(l).MaxProcesses)
}

func (s *Server) maxCores(l *License) *int { return firstInt(l.MaxCores, s.licensePolicy(l).MaxCores) }
func (s *Server) maxUsers(l *License) *int { return firstInt(l.MaxUsers, s.licensePolicy(l).MaxUsers) }

func (s *Server) licenseUserCount(l *License) int {
	n := len(l.UserIDs)
	if l.OwnerID != "" && !slices.Contains(l.UserIDs, l.OwnerID) {
		n++
	}
	return n
}

func (s *Server) licenseBanned(l *License) bool {
	if l.OwnerID == "" {
		return false
	}
	u := s.user(l.OwnerID)
	return u != nil && u.Banned
}

func (s *Server) licenseExpired(l *License, now time.Time) bool {
	return l.Expiry != nil && !l.Expiry.After(now)
}

// deleteMachine removes a machine with its components and processes.
func (s *Server) deleteMachine(id string) {
	s.machines = slices.DeleteFunc(s.machines, func(m *machine) bool { return m.ID == id })
	s.components = slices.DeleteFunc(s.components, func(c *component) bool { return c.MachineID == id })
	s.processes = slices.DeleteFunc(s.processes, func(p *process) bool { return p.MachineID == id })
}

func (s *Server) deleteProcess(id string) {
	s.processes = slices.DeleteFunc(s.processes, func(p *process) bool { return p.ID == id })
}

func (e *apiError) String() string { return fmt.Sprintf("%d %s", e.Status, e.Detail) }
