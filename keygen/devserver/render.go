package devserver

import (
	"fmt"
	"strconv"
	"time"
)

// JSON:API serializers (camelCase attributes, Keygen's relationship shapes).

type obj = map[string]any

func (s *Server) link(parts ...string) string {
	p := "/v1/accounts/" + s.account
	for _, x := range parts {
		p += "/" + x
	}
	return p
}

func rel(typ, id string) obj {
	if id == "" {
		return obj{"data": nil}
	}
	return obj{"data": obj{"type": typ, "id": id}}
}

func relLinked(typ, id, related string) obj {
	r := rel(typ, id)
	r["links"] = obj{"related": related}
	return r
}

func (s *Server) accountRel() obj { return relLinked("accounts", s.account, s.link()) }

func nullStr(v string) any {
	if v == "" {
		return nil
	}
	return v
}

func nullInt(v *int) any {
	if v == nil {
		return nil
	}
	return *v
}

func nullInt64(v *int64) any {
	if v == nil {
		return nil
	}
	return *v
}

func (s *Server) licenseStatus(l *License, now time.Time) string {
	switch {
	case s.licenseBanned(l):
		return "BANNED"
	case l.Suspended:
		return "SUSPENDED"
	case s.licenseExpired(l, now):
		return "EXPIRED"
	case l.Expiry != nil && l.Expiry.Sub(now) < 3*24*time.Hour:
		return "EXPIRING"
	}
	last := l.Created
	for _, t := range []*time.Time{l.LastValidated, l.LastCheckIn, l.LastCheckOut} {
		if t != nil && t.After(last) {
			last = *t
		}
	}
	if now.Sub(last) > 90*24*time.Hour {
		return "INACTIVE"
	}
	return "ACTIVE"
}

func (s *Server) renderLicense(l *License, now time.Time) obj {
	pol := s.licensePolicy(l)
	ms := s.machinesOf(l.ID)
	var cores int
	var mem, disk int64
	for _, m := range ms {
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
	var nextCheckIn any
	if pol.RequireCheckIn && l.LastCheckIn != nil {
		nextCheckIn = isoTime(checkInDeadline(pol, *l.LastCheckIn))
	}
	self := s.link("licenses", l.ID)
	return obj{
		"id":   l.ID,
		"type": "licenses",
		"attributes": obj{
			"name": nullStr(l.Name), "key": l.Key, "expiry": isoTimePtr(l.Expiry),
			"status": s.licenseStatus(l, now), "uses": l.Uses, "maxUses": nullInt(firstInt(l.MaxUses, pol.MaxUses)),
			"suspended": l.Suspended, "scheme": nullStr(pol.Scheme), "encrypted": false,
			"strict": pol.Strict, "floating": pol.Floating, "protected": pol.Protected, "version": nil,
			"requireHeartbeat": pol.RequireHeartbeat, "requireCheckIn": pol.RequireCheckIn,
			"maxMachines": nullInt(s.maxMachines(l)), "maxProcesses": nullInt(s.maxProcesses(l)),
			"maxUsers": nullInt(s.maxUsers(l)), "maxCores": nullInt(s.maxCores(l)),
			"maxMemory": nullInt64(pol.MaxMemory), "maxDisk": nullInt64(pol.MaxDisk),
			"lastValidated": isoTimePtr(l.LastValidated), "lastCheckIn": isoTimePtr(l.LastCheckIn),
			"nextCheckIn": nextCheckIn, "lastCheckOut": isoTimePtr(l.LastCheckOut),
			"metadata": cloneMap(l.Metadata), "created": isoTime(l.Created), "updated": isoTime(l.Updated),
		},
		"relationships": obj{
			"account":     s.accountRel(),
			"environment": obj{"data": nil},
			"product":     relLinked("products", l.ProductID, self+"/product"),
			"policy":      relLinked("policies", l.PolicyID, self+"/policy"),
			"group":       obj{"data": nil},
			"owner":       relLinked("users", l.OwnerID, self+"/owner"),
			"users":       obj{"links": obj{"related": self + "/users"}, "meta": obj{"count": s.licenseUserCount(l)}},
			"machines": obj{"links": obj{"related": self + "/machines"},
				"meta": obj{"cores": cores, "memory": mem, "disk": disk, "count": len(ms)}},
			"tokens":       obj{"links": obj{"related": self + "/tokens"}},
			"entitlements": obj{"links": obj{"related": self + "/entitlements"}},
		},
		"links": obj{"self": self},
	}
}

func (s *Server) renderPolicy(p *Policy) obj {
	return obj{
		"id":   p.ID,
		"type": "policies",
		"attributes": obj{
			"name": p.Name, "duration": nullInt(p.Duration), "strict": p.Strict, "floating": p.Floating,
			"scheme": nullStr(p.Scheme), "usePool": false, "encrypted": false, "protected": p.Protected,
			"requireProductScope": p.RequireProductScope, "requirePolicyScope": p.RequirePolicyScope,
			"requireMachineScope": p.RequireMachineScope, "requireFingerprintScope": p.RequireFingerprintScope,
			"requireComponentsScope": p.RequireComponentsScope, "requireUserScope": p.RequireUserScope,
			"requireChecksumScope": p.RequireChecksumScope, "requireVersionScope": p.RequireVersionScope,
			"requireCheckIn": p.RequireCheckIn, "checkInInterval": nullStr(p.CheckInInterval),
			"checkInIntervalCount": nullIntZero(p.CheckInIntervalCount),
			"maxMachines":          nullInt(p.MaxMachines), "maxProcesses": nullInt(p.MaxProcesses), "maxUsers": nullInt(p.MaxUsers),
			"maxCores": nullInt(p.MaxCores), "maxMemory": nullInt64(p.MaxMemory), "maxDisk": nullInt64(p.MaxDisk),
			"maxUses": nullInt(p.MaxUses), "requireHeartbeat": p.RequireHeartbeat,
			"heartbeatDuration": nullInt(p.HeartbeatDuration), "heartbeatCullStrategy": p.HeartbeatCullStrategy,
			"heartbeatResurrectionStrategy": p.HeartbeatResurrectionStrategy, "heartbeatBasis": p.HeartbeatBasis,
			"machineUniquenessStrategy": p.MachineUniquenessStrategy, "machineMatchingStrategy": p.MachineMatchingStrategy,
			"componentUniquenessStrategy": p.ComponentUniquenessStrategy, "componentMatchingStrategy": p.ComponentMatchingStrategy,
			"expirationStrategy": p.ExpirationStrategy, "expirationBasis": p.ExpirationBasis, "renewalBasis": p.RenewalBasis,
			"transferStrategy": p.TransferStrategy, "authenticationStrategy": p.AuthenticationStrategy,
			"machineLeasingStrategy": p.MachineLeasingStrategy, "processLeasingStrategy": p.ProcessLeasingStrategy,
			"overageStrategy": p.OverageStrategy, "metadata": cloneMap(p.Metadata),
			"created": isoTime(p.Created), "updated": isoTime(p.Created),
		},
		"relationships": obj{
			"account":      s.accountRel(),
			"environment":  obj{"data": nil},
			"product":      relLinked("products", p.ProductID, s.link("policies", p.ID, "product")),
			"entitlements": obj{"links": obj{"related": s.link("policies", p.ID, "entitlements")}},
		},
		"links": obj{"self": s.link("policies", p.ID)},
	}
}

func nullIntZero(v int) any {
	if v == 0 {
		return nil
	}
	return v
}

func (s *Server) renderProduct(p *Product) obj {
	return obj{
		"id": p.ID, "type": "products",
		"attributes": obj{"name": p.Name, "code": nil, "distributionStrategy": "LICENSED", "url": nil,
			"platforms": []string{}, "permissions": []string{}, "metadata": cloneMap(p.Metadata),
			"created": isoTime(p.Created), "updated": isoTime(p.Created)},
		"relationships": obj{"account": s.accountRel(), "environment": obj{"data": nil}},
		"links":         obj{"self": s.link("products", p.ID)},
	}
}

func (s *Server) renderEntitlement(e *Entitlement) obj {
	return obj{
		"id": e.ID, "type": "entitlements",
		"attributes": obj{"name": e.Name, "code": e.Code, "metadata": cloneMap(e.Metadata),
			"created": isoTime(e.Created), "updated": isoTime(e.Created)},
		"relationships": obj{"account": s.accountRel(), "environment": obj{"data": nil}},
		"links":         obj{"self": s.link("entitlements", e.ID)},
	}
}

func (s *Server) renderUser(u *User) obj {
	status := "ACTIVE"
	if u.Banned {
		status = "BANNED"
	}
	return obj{
		"id": u.ID, "type": "users",
		"attributes": obj{"fullName": nil, "firstName": nil, "lastName": nil, "email": u.Email, "status": status,
			"role": "user", "metadata": obj{}, "created": isoTime(u.Created), "updated": isoTime(u.Created)},
		"relationships": obj{"account": s.accountRel()},
		"links":         obj{"self": s.link("users", u.ID)},
	}
}

func (s *Server) renderMachine(m *machine, now time.Time, statusOverride string) obj {
	l := s.license(m.LicenseID)
	pol := s.machinePolicy(m)
	status := s.machineStatus(m, now)
	if statusOverride != "" {
		status = statusOverride
	}
	var maxProc *int
	productID := ""
	if l != nil {
		maxProc = firstInt(m.MaxProcesses, s.maxProcesses(l))
		productID = l.ProductID
	}
	self := s.link("machines", m.ID)
	return obj{
		"id": m.ID, "type": "machines",
		"attributes": obj{
			"fingerprint": m.Fingerprint, "cores": nullInt(m.Cores), "memory": nullInt64(m.Memory), "disk": nullInt64(m.Disk),
			"ip": nullStr(m.IP), "hostname": nullStr(m.Hostname), "platform": nullStr(m.Platform), "name": nullStr(m.Name),
			"requireHeartbeat": pol.RequireHeartbeat || m.LastHeartbeat != nil, "heartbeatStatus": status, // requireHeartbeat: machine.rb requires_heartbeat?
			"heartbeatDuration": int(pol.heartbeatDuration() / time.Second), "maxProcesses": nullInt(maxProc),
			"lastCheckOut": isoTimePtr(m.LastCheckOut), "lastHeartbeat": isoTimePtr(m.LastHeartbeat),
			"nextHeartbeat": isoTimePtr(s.machineNext(m)), "metadata": cloneMap(m.Metadata),
			"created": isoTime(m.Created), "updated": isoTime(m.Updated),
		},
		"relationships": obj{
			"account":     s.accountRel(),
			"environment": obj{"data": nil},
			"product":     relLinked("products", productID, self+"/product"),
			"group":       obj{"data": nil},
			"license":     relLinked("licenses", m.LicenseID, self+"/license"),
			"owner":       relLinked("users", m.OwnerID, self+"/owner"),
			"components":  obj{"links": obj{"related": self + "/components"}},
			"processes":   obj{"links": obj{"related": self + "/processes"}},
		},
		"links": obj{"self": self},
	}
}

func (s *Server) renderComponent(c *component) obj {
	m := s.machine(c.MachineID)
	licID, prodID := "", ""
	if m != nil {
		licID = m.LicenseID
		if l := s.license(licID); l != nil {
			prodID = l.ProductID
		}
	}
	self := s.link("components", c.ID)
	return obj{
		"id": c.ID, "type": "components",
		"attributes": obj{"fingerprint": c.Fingerprint, "name": c.Name, "metadata": cloneMap(c.Metadata),
			"created": isoTime(c.Created), "updated": isoTime(c.Updated)},
		"relationships": obj{
			"account": s.accountRel(), "environment": obj{"data": nil},
			"product": relLinked("products", prodID, self+"/product"),
			"license": relLinked("licenses", licID, self+"/license"),
			"machine": relLinked("machines", c.MachineID, self+"/machine"),
		},
		"links": obj{"self": self},
	}
}

func (s *Server) renderProcess(p *process, now time.Time, statusOverride string) obj {
	m := s.machine(p.MachineID)
	licID, prodID := "", ""
	if m != nil {
		licID = m.LicenseID
		if l := s.license(licID); l != nil {
			prodID = l.ProductID
		}
	}
	status := s.processStatus(p, now)
	if statusOverride != "" {
		status = statusOverride
	}
	interval := s.processInterval(p)
	self := s.link("processes", p.ID)
	return obj{
		"id": p.ID, "type": "processes",
		"attributes": obj{"pid": p.PID, "status": status, "interval": int(interval / time.Second),
			"lastHeartbeat": isoTime(p.LastHeartbeat), "nextHeartbeat": isoTime(p.LastHeartbeat.Add(interval)),
			"metadata": cloneMap(p.Metadata), "created": isoTime(p.Created), "updated": isoTime(p.Updated)},
		"relationships": obj{
			"account": s.accountRel(), "environment": obj{"data": nil},
			"product": relLinked("products", prodID, self+"/product"),
			"license": relLinked("licenses", licID, self+"/license"),
			"machine": relLinked("machines", p.MachineID, self+"/machine"),
		},
		"links": obj{"self": self},
	}
}

func (s *Server) renderToken(t *token) obj {
	kind := t.Kind + "-token"
	if t.Kind == "license" {
		kind = "activation-token"
	}
	attrs := obj{"kind": kind, "token": t.Token, "expiry": nil, "name": nil,
		"permissions": []string{"*"}, "created": isoTime(t.Created), "updated": isoTime(t.Created)}
	if t.Kind == "license" {
		attrs["maxActivations"], attrs["activations"] = nullInt(t.MaxActivations), t.Activations
		attrs["maxDeactivations"], attrs["deactivations"] = nullInt(t.MaxDeactivations), t.Deactivations
	}
	return obj{
		"id": t.ID, "type": "tokens",
		"attributes":    attrs,
		"relationships": obj{"account": s.accountRel()},
		"links":         obj{"self": s.link("tokens", t.ID)},
	}
}

// checkInDeadline is when a license checked in at last becomes overdue.
func checkInDeadline(p *Policy, last time.Time) time.Time {
	n := p.CheckInIntervalCount
	switch p.CheckInInterval {
	case "day":
		return last.AddDate(0, 0, n)
	case "week":
		return last.AddDate(0, 0, 7*n)
	case "month":
		return last.AddDate(0, n, 0)
	case "year":
		return last.AddDate(n, 0, 0)
	}
	return last
}

func data(v any) obj { return obj{"data": v} }

// page renders a collection the way Keygen's index actions do: with
// page[number]/page[size] (size 1..100) it paginates and links pages;
// otherwise ?limit= (1..100, default 10) caps the result.
func page[T any](c *call, items []T, f func(T) obj) obj {
	q := c.r.URL.Query()
	render := func(xs []T) []any {
		out := make([]any, 0, len(xs))
		for _, it := range xs {
			out = append(out, f(it))
		}
		return out
	}
	base := c.s.link() + c.r.URL.Path
	if q.Has("page[number]") || q.Has("page[size]") {
		size, number := 10, 1
		if v, err := strconv.Atoi(q.Get("page[size]")); err == nil {
			size = min(max(v, 1), 100)
		}
		if v, err := strconv.Atoi(q.Get("page[number]")); err == nil {
			number = max(v, 1)
		}
		pages := max((len(items)+size-1)/size, 1)
		link := func(n int) any {
			if n < 1 || n > pages {
				return nil
			}
			return fmt.Sprintf("%s?page[number]=%d&page[size]=%d", base, n, size)
		}
		start := min((number-1)*size, len(items))
		return obj{"data": render(items[start:min(len(items), start+size)]), "links": obj{
			"self": link(number), "first": link(1), "last": link(pages), "prev": link(number - 1), "next": link(number + 1),
			"meta": obj{"pages": pages, "count": len(items)},
		}}
	}
	limit := 10
	if v, err := strconv.Atoi(q.Get("limit")); err == nil {
		limit = min(max(v, 1), 100)
	}
	return obj{"data": render(items[:min(len(items), limit)]), "links": obj{"self": base}}
}
