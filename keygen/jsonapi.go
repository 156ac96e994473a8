package keygen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// document is a JSON:API top-level document as Keygen renders it.
type document struct {
	Data     json.RawMessage `json:"data"`
	Included []resource      `json:"included"`
	Meta     json.RawMessage `json:"meta"`
	Errors   []errorObject   `json:"errors"`
	Links    struct {
		Next json.RawMessage `json:"next"`
	} `json:"links"`
}

// hasNext reports whether a paginated document links to a next page.
func (d *document) hasNext() bool {
	var next string
	return !isNull(d.Links.Next) && json.Unmarshal(d.Links.Next, &next) == nil && next != ""
}

type resource struct {
	ID            string                  `json:"id"`
	Type          string                  `json:"type"`
	Attributes    json.RawMessage         `json:"attributes"`
	Relationships map[string]relationship `json:"relationships"`
}

type relationship struct {
	Data json.RawMessage `json:"data"`
}

type identifier struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

type errorObject struct {
	Title  string      `json:"title"`
	Detail string      `json:"detail"`
	Code   string      `json:"code"`
	Source ErrorSource `json:"source"`
}

// relID returns the id of a to-one relationship, or "".
func (r *resource) relID(name string) string {
	rel, ok := r.Relationships[name]
	if !ok || len(rel.Data) == 0 {
		return ""
	}
	var id identifier
	if json.Unmarshal(rel.Data, &id) != nil {
		return ""
	}
	return id.ID
}

func isNull(b json.RawMessage) bool {
	b = bytes.TrimSpace(b)
	return len(b) == 0 || bytes.Equal(b, []byte("null"))
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformedResponse}, args...)...)
}

// decodeDocument parses body as a JSON:API document.
func decodeDocument(body []byte) (*document, error) {
	var d document
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, malformed("decode JSON:API document: %v", err)
	}
	return &d, nil
}

// one decodes the primary data as a single resource of type typ.
func (d *document) one(typ string) (*resource, error) {
	if isNull(d.Data) {
		return nil, malformed("no %s in response", typ)
	}
	var r resource
	if err := json.Unmarshal(d.Data, &r); err != nil {
		return nil, malformed("decode %s resource: %v", typ, err)
	}
	if r.Type != typ || r.ID == "" {
		return nil, malformed("expected a %s resource, got type %q id %q", typ, r.Type, r.ID)
	}
	return &r, nil
}

// many decodes the primary data as an array of resources of type typ.
func (d *document) many(typ string) ([]resource, error) {
	if isNull(d.Data) {
		return nil, nil
	}
	var rs []resource
	if err := json.Unmarshal(d.Data, &rs); err != nil {
		return nil, malformed("decode %s list: %v", typ, err)
	}
	for i := range rs {
		if rs[i].Type != typ || rs[i].ID == "" {
			return nil, malformed("expected %s resources, got type %q id %q", typ, rs[i].Type, rs[i].ID)
		}
	}
	return rs, nil
}

func attrs(r *resource, v any) error {
	if isNull(r.Attributes) {
		return malformed("%s %s has no attributes", r.Type, r.ID)
	}
	if err := json.Unmarshal(r.Attributes, v); err != nil {
		return malformed("decode %s attributes: %v", r.Type, err)
	}
	return nil
}

type licenseAttrs struct {
	Name             string         `json:"name"`
	Key              string         `json:"key"`
	Status           string         `json:"status"`
	Scheme           string         `json:"scheme"`
	Expiry           *time.Time     `json:"expiry"`
	Suspended        bool           `json:"suspended"`
	Strict           bool           `json:"strict"`
	Floating         bool           `json:"floating"`
	Protected        bool           `json:"protected"`
	RequireHeartbeat bool           `json:"requireHeartbeat"`
	MaxMachines      *int           `json:"maxMachines"`
	MaxProcesses     *int           `json:"maxProcesses"`
	MaxUsers         *int           `json:"maxUsers"`
	MaxCores         *int           `json:"maxCores"`
	Uses             int            `json:"uses"`
	MaxUses          *int           `json:"maxUses"`
	RequireCheckIn   bool           `json:"requireCheckIn"`
	LastCheckIn      *time.Time     `json:"lastCheckIn"`
	NextCheckIn      *time.Time     `json:"nextCheckIn"`
	Metadata         map[string]any `json:"metadata"`
	Created          time.Time      `json:"created"`
	Updated          time.Time      `json:"updated"`
}

func toLicense(r *resource) (*License, error) {
	var a licenseAttrs
	if err := attrs(r, &a); err != nil {
		return nil, err
	}
	return &License{
		ID: r.ID, Name: a.Name, Key: a.Key, Status: a.Status, Scheme: a.Scheme, Expiry: a.Expiry,
		Suspended: a.Suspended, Strict: a.Strict, Floating: a.Floating, Protected: a.Protected,
		RequireHeartbeat: a.RequireHeartbeat, MaxMachines: a.MaxMachines, MaxProcesses: a.MaxProcesses,
		MaxUsers: a.MaxUsers, MaxCores: a.MaxCores, Uses: a.Uses, MaxUses: a.MaxUses, Metadata: a.Metadata,
		RequireCheckIn: a.RequireCheckIn, LastCheckIn: a.LastCheckIn, NextCheckIn: a.NextCheckIn,
		PolicyID: r.relID("policy"), ProductID: r.relID("product"), Created: a.Created, Updated: a.Updated,
	}, nil
}

type machineAttrs struct {
	Fingerprint       string         `json:"fingerprint"`
	Name              string         `json:"name"`
	Hostname          string         `json:"hostname"`
	Platform          string         `json:"platform"`
	IP                string         `json:"ip"`
	HeartbeatStatus   string         `json:"heartbeatStatus"`
	Cores             int            `json:"cores"`
	Memory            int64          `json:"memory"`
	RequireHeartbeat  bool           `json:"requireHeartbeat"`
	HeartbeatDuration int            `json:"heartbeatDuration"`
	MaxProcesses      *int           `json:"maxProcesses"`
	LastHeartbeat     *time.Time     `json:"lastHeartbeat"`
	NextHeartbeat     *time.Time     `json:"nextHeartbeat"`
	Metadata          map[string]any `json:"metadata"`
	Created           time.Time      `json:"created"`
}

func toMachine(r *resource) (*Machine, error) {
	var a machineAttrs
	if err := attrs(r, &a); err != nil {
		return nil, err
	}
	return &Machine{
		ID: r.ID, Fingerprint: a.Fingerprint, Name: a.Name, Hostname: a.Hostname, Platform: a.Platform, IP: a.IP,
		HeartbeatStatus: a.HeartbeatStatus, LicenseID: r.relID("license"), OwnerID: r.relID("owner"), Cores: a.Cores, Memory: a.Memory,
		RequireHeartbeat: a.RequireHeartbeat, HeartbeatDuration: a.HeartbeatDuration, MaxProcesses: a.MaxProcesses,
		LastHeartbeat: a.LastHeartbeat, NextHeartbeat: a.NextHeartbeat, Metadata: a.Metadata, Created: a.Created,
	}, nil
}

type processAttrs struct {
	PID           string         `json:"pid"`
	Status        string         `json:"status"`
	Interval      int            `json:"interval"`
	LastHeartbeat *time.Time     `json:"lastHeartbeat"`
	NextHeartbeat *time.Time     `json:"nextHeartbeat"`
	Metadata      map[string]any `json:"metadata"`
	Created       time.Time      `json:"created"`
}

func toProcess(r *resource) (*Process, error) {
	var a processAttrs
	if err := attrs(r, &a); err != nil {
		return nil, err
	}
	return &Process{
		ID: r.ID, PID: a.PID, Status: a.Status, MachineID: r.relID("machine"), LicenseID: r.relID("license"),
		Interval: a.Interval, LastHeartbeat: a.LastHeartbeat, NextHeartbeat: a.NextHeartbeat,
		Metadata: a.Metadata, Created: a.Created,
	}, nil
}

type componentAttrs struct {
	Fingerprint string         `json:"fingerprint"`
	Name        string         `json:"name"`
	Metadata    map[string]any `json:"metadata"`
}

func toComponent(r *resource) (*Component, error) {
	var a componentAttrs
	if err := attrs(r, &a); err != nil {
		return nil, err
	}
	return &Component{ID: r.ID, Fingerprint: a.Fingerprint, Name: a.Name, MachineID: r.relID("machine"), Metadata: a.Metadata}, nil
}

type entitlementAttrs struct {
	Code     string         `json:"code"`
	Name     string         `json:"name"`
	Metadata map[string]any `json:"metadata"`
}

func toEntitlement(r *resource) (*Entitlement, error) {
	var a entitlementAttrs
	if err := attrs(r, &a); err != nil {
		return nil, err
	}
	return &Entitlement{ID: r.ID, Code: a.Code, Name: a.Name, Metadata: a.Metadata}, nil
}

type policyAttrs struct {
	Name                          string `json:"name"`
	Scheme                        string `json:"scheme"`
	OverageStrategy               string `json:"overageStrategy"`
	ProcessLeasingStrategy        string `json:"processLeasingStrategy"`
	LeasingStrategy               string `json:"leasingStrategy"` // API <= 1.6
	MachineLeasingStrategy        string `json:"machineLeasingStrategy"`
	HeartbeatCullStrategy         string `json:"heartbeatCullStrategy"`
	HeartbeatResurrectionStrategy string `json:"heartbeatResurrectionStrategy"`
	HeartbeatBasis                string `json:"heartbeatBasis"`
	ExpirationStrategy            string `json:"expirationStrategy"`
	AuthenticationStrategy        string `json:"authenticationStrategy"`
	MachineMatchingStrategy       string `json:"machineMatchingStrategy"`
	ComponentMatchingStrategy     string `json:"componentMatchingStrategy"`
	Strict                        bool   `json:"strict"`
	Floating                      bool   `json:"floating"`
	RequireHeartbeat              bool   `json:"requireHeartbeat"`
	MaxMachines                   *int   `json:"maxMachines"`
	MaxProcesses                  *int   `json:"maxProcesses"`
	MaxCores                      *int   `json:"maxCores"`
	MaxUsers                      *int   `json:"maxUsers"`
	HeartbeatDuration             *int   `json:"heartbeatDuration"`
	Duration                      *int   `json:"duration"`
}

func toPolicy(r *resource) (*Policy, error) {
	var a policyAttrs
	if err := attrs(r, &a); err != nil {
		return nil, err
	}
	pls := a.ProcessLeasingStrategy
	if pls == "" {
		pls = a.LeasingStrategy
	}
	return &Policy{
		ID: r.ID, Name: a.Name, Scheme: a.Scheme, OverageStrategy: a.OverageStrategy, ProcessLeasingStrategy: pls,
		MachineLeasingStrategy: a.MachineLeasingStrategy, HeartbeatCullStrategy: a.HeartbeatCullStrategy,
		HeartbeatResurrectionStrategy: a.HeartbeatResurrectionStrategy, HeartbeatBasis: a.HeartbeatBasis,
		ExpirationStrategy: a.ExpirationStrategy, AuthenticationStrategy: a.AuthenticationStrategy,
		MachineMatchingStrategy: a.MachineMatchingStrategy, ComponentMatchingStrategy: a.ComponentMatchingStrategy,
		Strict: a.Strict, Floating: a.Floating, RequireHeartbeat: a.RequireHeartbeat, MaxMachines: a.MaxMachines,
		MaxProcesses: a.MaxProcesses, MaxCores: a.MaxCores, MaxUsers: a.MaxUsers,
		HeartbeatDuration: a.HeartbeatDuration, Duration: a.Duration,
	}, nil
}

// decodeAPIError turns a 4xx body into an *Error. A body without a usable
// errors array still yields an *Error carrying the status.
func decodeAPIError(status int, body []byte, requestID string) *Error {
	e := &Error{Status: status, RequestID: requestID}
	var d struct {
		Meta struct {
			ID string `json:"id"`
		} `json:"meta"`
		Errors []errorObject `json:"errors"`
	}
	if json.Unmarshal(body, &d) == nil && len(d.Errors) > 0 {
		o := d.Errors[0]
		e.Code, e.Title, e.Detail, e.Source = o.Code, o.Title, o.Detail, o.Source
		if e.RequestID == "" {
			e.RequestID = d.Meta.ID
		}
	}
	if e.Title == "" {
		e.Title = httpStatusTitle(status)
	}
	return e
}
