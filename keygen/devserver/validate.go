package devserver

import (
	"encoding/json"
	"math"
	"slices"
	"time"
)

// scope is a parsed meta.scope of a validation request.
type scope struct {
	raw                                                                 json.RawMessage
	has                                                                 map[string]bool
	product, policy, user, machine, fingerprint, checksum, version, env string
	fingerprints, components, entitlements                              []string
}

var scopeKinds = map[string]string{
	"product": "string", "policy": "string", "user": "string", "machine": "string", "fingerprint": "string",
	"checksum": "string", "version": "string", "environment": "string",
	"fingerprints": "array", "components": "array", "entitlements": "array",
}

func parseScope(doc *reqDoc) (*scope, *apiError) {
	sc := &scope{has: map[string]bool{}}
	raw, ok := doc.Meta["scope"]
	if !ok || jsonKind(raw) == "null" {
		return sc, nil
	}
	if k := jsonKind(raw); k != "object" {
		return nil, typeMismatch("/meta/scope", k, "object")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, typeMismatch("/meta/scope", "invalid", "object")
	}
	sc.raw = raw
	for k, v := range m {
		want, known := scopeKinds[k]
		if !known {
			return nil, badRequest("unpermitted parameter", "").pointer("/meta/scope/" + k)
		}
		kind := jsonKind(v)
		if kind == "null" {
			if k == "user" || k == "environment" {
				sc.has[k] = true
			}
			continue
		}
		if kind != want {
			return nil, typeMismatch("/meta/scope/"+k, kind, want)
		}
		var err error
		switch want {
		case "string":
			var s string
			err = json.Unmarshal(v, &s)
			dst := map[string]*string{"product": &sc.product, "policy": &sc.policy, "user": &sc.user, "machine": &sc.machine,
				"fingerprint": &sc.fingerprint, "checksum": &sc.checksum, "version": &sc.version, "environment": &sc.env}[k]
			if s == "" {
				// typed_params: string params without allow_blank refuse
				// "" (validations_controller.rb), even scope.product that
				// keygen-go always sends.
				return nil, badRequest("cannot be blank", "").pointer("/meta/scope/" + k)
			}
			*dst = s
			sc.has[k] = true
		case "array":
			var xs []string
			if json.Unmarshal(v, &xs) != nil {
				return nil, typeMismatch("/meta/scope/"+k, "array", "array of strings")
			}
			switch k {
			case "fingerprints":
				sc.fingerprints = xs
			case "components":
				sc.components = xs
			case "entitlements":
				sc.entitlements = xs
			}
			sc.has[k] = true
		}
		if err != nil {
			return nil, typeMismatch("/meta/scope/"+k, kind, want)
		}
	}
	return sc, nil
}

// passes applies a machine or component matching strategy.
func passes(strategy string, matched, supplied int) bool {
	switch strategy {
	case "MATCH_TWO":
		return matched >= 2
	case "MATCH_MOST":
		return matched >= int(math.Ceil(float64(supplied)/2))
	case "MATCH_ALL":
		return matched == supplied
	}
	return matched >= 1
}

type verdict struct {
	valid        bool
	detail, code string
}

func v(valid bool, detail, code string) verdict { return verdict{valid, detail, code} }

// validate is LicenseValidationService (keygen-api
// app/services/license_validation_service.rb): the first failing
// check wins. quick skips every scope check.
func (s *Server) validate(l *License, sc *scope, quick bool, now time.Time) verdict {
	if l == nil {
		return v(false, "does not exist", "NOT_FOUND")
	}
	pol := s.licensePolicy(l)
	expired := s.licenseExpired(l, now)
	switch {
	case s.licenseBanned(l):
		return v(false, "is banned", "BANNED")
	case l.Suspended:
		return v(false, "is suspended", "SUSPENDED")
	case expired && pol.ExpirationStrategy == "REVOKE_ACCESS":
		return v(false, "is expired", "EXPIRED")
	}
	if pol.RequireCheckIn {
		last := l.Created
		if l.LastCheckIn != nil {
			last = *l.LastCheckIn
		}
		if now.After(checkInDeadline(pol, last)) {
			return v(false, "is overdue for check in", "OVERDUE")
		}
	}
	machines := s.machinesOf(l.ID)
	if !quick {
		if r, done := s.validateScopes(l, pol, sc, machines, now); done {
			return r
		}
	}
	if limit := s.maxUsers(l); limit != nil {
		if n := s.licenseUserCount(l); n > *limit {
			return v(!pol.exceeds(n, *limit), "has too many associated users", "TOO_MANY_USERS")
		}
	}
	if !pol.Strict {
		if expired {
			return v(pol.ExpirationStrategy == "ALLOW_ACCESS" || pol.ExpirationStrategy == "MAINTAIN_ACCESS", "is expired", "EXPIRED")
		}
		return v(true, "is valid", "VALID")
	}
	if !pol.Floating && len(machines) == 0 {
		return v(false, "must have exactly 1 associated machine", "NO_MACHINE")
	}
	// license_validation_service.rb: the count is per owner under PER_USER
	// machine leasing (the scope's user, or machines without an owner);
	// node-locked overage is only ALWAYS_ALLOW or 2X.
	if !pol.Floating && len(machines) > 1 {
		limit := 1
		if m := s.maxMachines(l); m != nil {
			limit = *m
		}
		if n := s.leasedMachineCount(l, pol, sc, machines); n > limit {
			ok := pol.OverageStrategy == "ALWAYS_ALLOW_OVERAGE" || (pol.OverageStrategy == "ALLOW_2X_OVERAGE" && n <= 2*limit)
			return v(ok, "has too many associated machines", "TOO_MANY_MACHINES")
		}
	}
	if pol.Floating && len(machines) == 0 {
		return v(false, "must have at least 1 associated machine", "NO_MACHINES")
	}
	if limit := s.maxMachines(l); pol.Floating && limit != nil && len(machines) > 1 {
		if n := s.leasedMachineCount(l, pol, sc, machines); n > *limit {
			return v(!pol.exceeds(n, *limit), "has too many associated machines", "TOO_MANY_MACHINES")
		}
	}
	var cores int
	var mem, disk int64
	for _, m := range machines {
		if m.Cores != nil {
			cores += *m.Cores
		}
		if m.Memory != nil {
			mem += *m.Memory
		}
		if m.Disk != nil {
			disk += *m.Disk
		}
	}
	if limit := s.maxCores(l); limit != nil && cores > *limit {
		return v(!pol.exceeds(cores, *limit), "has too many associated machine cores", "TOO_MANY_CORES")
	}
	if pol.MaxMemory != nil && mem > *pol.MaxMemory {
		return v(float64(mem) <= float64(*pol.MaxMemory)*overage(pol), "has too much associated machine memory", "TOO_MUCH_MEMORY")
	}
	if pol.MaxDisk != nil && disk > *pol.MaxDisk {
		return v(float64(disk) <= float64(*pol.MaxDisk)*overage(pol), "has too much associated machine disk", "TOO_MUCH_DISK")
	}
	if r, done := s.validateProcesses(l, pol, sc, machines, now); done {
		return r
	}
	if expired {
		return v(pol.ExpirationStrategy == "ALLOW_ACCESS" || pol.ExpirationStrategy == "MAINTAIN_ACCESS", "is expired", "EXPIRED")
	}
	return v(true, "is valid", "VALID")
}

// leasedMachineCount is the machine count TOO_MANY_MACHINES compares:
// license-wide, or under PER_USER machine leasing the machines owned by
// the scope's user (nil owner when there is no user scope: "nil owner is
// significant" in keygen-api).
func (s *Server) leasedMachineCount(l *License, pol *Policy, sc *scope, machines []*machine) int {
	if pol.MachineLeasingStrategy != "PER_USER" {
		return len(machines)
	}
	owner := ""
	if sc != nil && sc.has["user"] {
		for _, id := range append([]string{l.OwnerID}, l.UserIDs...) {
			if s.userMatches(id, sc.user) {
				owner = s.user(id).ID
			}
		}
	}
	n := 0
	for _, m := range machines {
		if m.OwnerID == owner {
			n++
		}
	}
	return n
}

func (s *Server) validateProcesses(l *License, pol *Policy, sc *scope, machines []*machine, now time.Time) (verdict, bool) {
	limit := s.maxProcesses(l)
	count := 0
	switch pol.ProcessLeasingStrategy {
	case "PER_LICENSE":
		for _, m := range machines {
			count += len(s.processesOf(m.ID))
		}
	case "PER_USER":
		for _, m := range machines {
			if m.OwnerID == l.OwnerID || (sc.has["user"] && s.userMatches(m.OwnerID, sc.user)) {
				count += len(s.processesOf(m.ID))
			}
		}
	default:
		var m *machine
		for _, x := range machines {
			if (sc.has["machine"] && x.ID == sc.machine) || (sc.has["fingerprint"] && x.Fingerprint == sc.fingerprint) {
				m = x
			}
		}
		if m == nil || s.machineStatus(m, now) == statusDead {
			return verdict{}, false
		}
		limit = firstInt(m.MaxProcesses, limit)
		count = len(s.processesOf(m.ID))
	}
	if limit != nil && count > *limit {
		return v(!pol.exceeds(count, *limit), "has too many associated processes", "TOO_MANY_PROCESSES"), true
	}
	return verdict{}, false
}

func (s *Server) userMatches(userID, scopeUser string) bool {
	if userID == "" || scopeUser == "" {
		return false
	}
	u := s.user(userID)
	return u != nil && (u.ID == scopeUser || u.Email == scopeUser)
}

func (s *Server) validateScopes(l *License, pol *Policy, sc *scope, machines []*machine, now time.Time) (verdict, bool) {
	notActivated := func(what string) (verdict, bool) {
		if pol.Floating {
			return v(false, what+" is not activated (has no associated machines)", "NO_MACHINES"), true
		}
		return v(false, what+" is not activated (has no associated machine)", "NO_MACHINE"), true
	}
	switch {
	// No environments here: only a null environment scope matches.
	case sc.has["environment"] && sc.env != "":
		return v(false, "environment scope does not match", "ENVIRONMENT_SCOPE_MISMATCH"), true
	case !sc.has["environment"] && pol.RequireEnvironmentScope:
		return v(false, "environment scope is required", "ENVIRONMENT_SCOPE_REQUIRED"), true
	case sc.has["product"] && sc.product != l.ProductID:
		return v(false, "product scope does not match", "PRODUCT_SCOPE_MISMATCH"), true
	case !sc.has["product"] && pol.RequireProductScope:
		return v(false, "product scope is required", "PRODUCT_SCOPE_REQUIRED"), true
	case sc.has["policy"] && sc.policy != l.PolicyID:
		return v(false, "policy scope does not match", "POLICY_SCOPE_MISMATCH"), true
	case !sc.has["policy"] && pol.RequirePolicyScope:
		return v(false, "policy scope is required", "POLICY_SCOPE_REQUIRED"), true
	}
	if sc.has["user"] {
		okUser := false
		for _, id := range append([]string{l.OwnerID}, l.UserIDs...) {
			if s.userMatches(id, sc.user) {
				okUser = true
			}
		}
		if !okUser {
			return v(false, "user scope does not match", "USER_SCOPE_MISMATCH"), true
		}
	} else if pol.RequireUserScope {
		return v(false, "user scope is required", "USER_SCOPE_REQUIRED"), true
	}
	if sc.has["entitlements"] {
		if len(sc.entitlements) == 0 {
			return v(false, "entitlements scope is empty", "ENTITLEMENTS_SCOPE_EMPTY"), true
		}
		have := map[string]bool{}
		for _, e := range s.licenseEntitlements(l.ID) {
			have[e.Code] = true
		}
		for _, code := range sc.entitlements {
			if !have[code] {
				return v(false, "is missing one or more required entitlements", "ENTITLEMENTS_MISSING"), true
			}
		}
	}
	if sc.has["machine"] {
		if len(machines) == 0 {
			return notActivated("machine")
		}
		var m *machine
		for _, x := range machines {
			if x.ID == sc.machine {
				m = x
			}
		}
		if m == nil {
			return v(false, "machine is not activated (does not match any associated machines)", "MACHINE_SCOPE_MISMATCH"), true
		}
		if sc.has["user"] && m.OwnerID != "" && !s.userMatches(m.OwnerID, sc.user) {
			return v(false, "user scope does not match (does not match associated machine owner)", "USER_SCOPE_MISMATCH"), true
		}
		switch st := s.machineStatus(m, now); {
		case st == statusNotStarted && pol.RequireHeartbeat:
			return v(false, "machine heartbeat is required", "HEARTBEAT_NOT_STARTED"), true
		case st == statusDead:
			return v(false, "machine heartbeat is dead", "HEARTBEAT_DEAD"), true
		}
	} else if pol.RequireMachineScope {
		return v(false, "machine scope is required", "MACHINE_SCOPE_REQUIRED"), true
	}
	if sc.has["fingerprint"] || sc.has["fingerprints"] {
		// license_validation_service.rb: scope[:fingerprint] ||
		// scope[:fingerprints], never both merged.
		var fps []string
		src := sc.fingerprints
		if sc.has["fingerprint"] {
			src = []string{sc.fingerprint}
		}
		for _, f := range src {
			if !slices.Contains(fps, f) {
				fps = append(fps, f)
			}
		}
		if len(fps) == 0 {
			return v(false, "fingerprint scope is empty", "FINGERPRINT_SCOPE_EMPTY"), true
		}
		if len(machines) == 0 {
			return notActivated("fingerprint")
		}
		var dead, alive []*machine
		for _, m := range machines {
			if slices.Contains(fps, m.Fingerprint) {
				if s.machineStatus(m, now) == statusDead {
					dead = append(dead, m)
				} else {
					alive = append(alive, m)
				}
			}
		}
		// HEARTBEAT_DEAD only when every supplied fingerprint is dead.
		if len(dead) == len(fps) {
			return v(false, "machine heartbeat is dead", "HEARTBEAT_DEAD"), true
		}
		if len(fps) > 1 {
			if !passes(pol.MachineMatchingStrategy, len(alive), len(fps)) {
				what := map[string]string{"MATCH_MOST": "enough", "MATCH_TWO": "at least 2", "MATCH_ALL": "all"}[pol.MachineMatchingStrategy]
				if what == "" {
					what = "any"
				}
				return v(false, "one or more fingerprint is not activated (does not match "+what+" associated machines)", "FINGERPRINT_SCOPE_MISMATCH"), true
			}
		} else if len(alive) == 0 {
			return v(false, "fingerprint is not activated (does not match any associated machines)", "FINGERPRINT_SCOPE_MISMATCH"), true
		}
		for _, m := range alive {
			if sc.has["user"] && m.OwnerID != "" && !s.userMatches(m.OwnerID, sc.user) {
				return v(false, "user scope does not match (does not match associated machine owners)", "USER_SCOPE_MISMATCH"), true
			}
		}
		if pol.RequireHeartbeat {
			for _, m := range alive {
				if s.machineStatus(m, now) == statusNotStarted {
					return v(false, "machine heartbeat is required", "HEARTBEAT_NOT_STARTED"), true
				}
			}
		}
	} else if pol.RequireFingerprintScope {
		return v(false, "fingerprint scope is required", "FINGERPRINT_SCOPE_REQUIRED"), true
	}
	if sc.has["components"] {
		if sc.fingerprint == "" {
			return v(false, "fingerprint scope is required when using the components scope", "FINGERPRINT_SCOPE_REQUIRED"), true
		}
		if len(sc.components) == 0 {
			return v(false, "components scope is empty", "COMPONENTS_SCOPE_EMPTY"), true
		}
		var m *machine
		for _, x := range machines {
			if x.Fingerprint == sc.fingerprint {
				m = x
			}
		}
		matched := 0
		if m != nil {
			for _, cp := range s.componentsOf(m.ID) {
				if slices.Contains(sc.components, cp.Fingerprint) {
					matched++
				}
			}
		}
		if !passes(pol.ComponentMatchingStrategy, matched, len(sc.components)) {
			what := map[string]string{"MATCH_MOST": "enough", "MATCH_TWO": "at least 2", "MATCH_ALL": "all"}[pol.ComponentMatchingStrategy]
			if what == "" {
				what = "any"
			}
			return v(false, "one or more component is not activated (does not match "+what+" associated components)", "COMPONENTS_SCOPE_MISMATCH"), true
		}
	} else if pol.RequireComponentsScope {
		return v(false, "components scope is required", "COMPONENTS_SCOPE_REQUIRED"), true
	}
	// This server hosts no releases: any checksum or version scope mismatches.
	switch {
	case sc.has["checksum"]:
		return v(false, "checksum scope is not valid (does not match any accessible artifacts)", "CHECKSUM_SCOPE_MISMATCH"), true
	case pol.RequireChecksumScope:
		return v(false, "checksum scope is required", "CHECKSUM_SCOPE_REQUIRED"), true
	case sc.has["version"]:
		return v(false, "version scope is not valid (does not match any accessible releases)", "VERSION_SCOPE_MISMATCH"), true
	case pol.RequireVersionScope:
		return v(false, "version scope is required", "VERSION_SCOPE_REQUIRED"), true
	}
	return verdict{}, false
}

// validationReply renders the validation document (keygen-api
// app/controllers/api/v1/licenses/actions/validations_controller.rb).
func (c *call) validationReply(l *License, doc *reqDoc, sc *scope, quick bool) (*reply, error) {
	var nonce *int64
	if !quick {
		var n int64
		present, isNull, err := doc.metaValue("nonce", "integer", &n)
		if err != nil {
			return nil, err
		}
		if present && !isNull {
			nonce = &n
		}
	}
	r := c.s.validate(l, sc, quick, c.now)
	meta := obj{"ts": isoTime(c.now), "valid": r.valid, "detail": r.detail, "code": r.code}
	if nonce != nil {
		meta["nonce"] = *nonce
	}
	if !quick && sc.raw != nil {
		meta["scope"] = json.RawMessage(sc.raw)
	}
	var d any
	if l != nil {
		// LicenseValidationService#touch! saves last_validated_at
		// (TouchLicenseWorker), which moves updated_at too.
		t := c.now.UTC()
		l.LastValidated = &t
		l.Updated = t
		d = c.s.renderLicense(l, c.now)
	}
	return ok(obj{"data": d, "meta": meta})
}

func (c *call) hValidateKey() (*reply, error) {
	doc, err := decodeBody(c.body)
	if err != nil {
		return nil, err
	}
	var key string
	present, isNull, err := doc.metaValue("key", "string", &key)
	if err != nil {
		return nil, err
	}
	if !present || isNull || key == "" {
		return nil, badRequest("is missing", "").pointer("/meta/key")
	}
	sc, err := parseScope(doc)
	if err != nil {
		return nil, err
	}
	l := c.s.licenseByKey(key)
	// license_policy.rb validate_key?: anonymous, or an unknown key, is
	// allowed; a bearer must be allowed to validate that license (another
	// license's credentials are 403, as is a license lacking
	// license.validate).
	if l != nil && c.auth != nil {
		if !c.canLicense(l) {
			return nil, forbidden()
		}
		if err := c.can("license.validate"); err != nil {
			return nil, err
		}
	}
	return c.validationReply(l, doc, sc, false)
}

func (c *call) hValidate() (*reply, error) {
	l, err := c.findLicense(c.r.PathValue("id"), "license.validate")
	if err != nil {
		return nil, err
	}
	quick := c.r.Method == "GET"
	doc := &reqDoc{}
	sc := &scope{has: map[string]bool{}}
	if !quick {
		if doc, err = decodeBody(c.body); err != nil {
			return nil, err
		}
		if sc, err = parseScope(doc); err != nil {
			return nil, err
		}
	}
	return c.validationReply(l, doc, sc, quick)
}
