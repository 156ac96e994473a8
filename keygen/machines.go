package keygen

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

type ref struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

func rel(typ, id string) map[string]ref { return map[string]ref{"data": {Type: typ, ID: id}} }

type componentBody struct {
	Type       string         `json:"type"`
	Attributes map[string]any `json:"attributes"`
}

func (p ComponentParams) attributes() map[string]any {
	a := map[string]any{"fingerprint": p.Fingerprint, "name": p.Name}
	if p.Metadata != nil {
		a["metadata"] = p.Metadata
	}
	return a
}

// MaxInlineComponents is Keygen's limit on components sent with an
// activation.
const MaxInlineComponents = 20

// ActivateMachine activates a machine for a license (POST /machines), with
// its components inline.
func (c *Client) ActivateMachine(ctx context.Context, p ActivateParams) (*Machine, error) {
	if p.LicenseID == "" || p.Fingerprint == "" {
		return nil, fmt.Errorf("keygen: activate: license id and fingerprint are required")
	}
	if len(p.Components) > MaxInlineComponents {
		return nil, fmt.Errorf("keygen: activate: %d components, at most %d", len(p.Components), MaxInlineComponents)
	}
	a := map[string]any{"fingerprint": p.Fingerprint}
	for k, v := range map[string]string{"name": p.Name, "hostname": p.Hostname, "platform": p.Platform} {
		if v != "" {
			a[k] = v
		}
	}
	if p.Cores > 0 {
		a["cores"] = p.Cores
	}
	if p.Memory > 0 {
		a["memory"] = p.Memory
	}
	if p.Metadata != nil {
		a["metadata"] = p.Metadata
	}
	rels := map[string]any{"license": rel("licenses", p.LicenseID)}
	if len(p.Components) > 0 {
		cs := make([]componentBody, len(p.Components))
		for i, cp := range p.Components {
			cs[i] = componentBody{Type: "components", Attributes: cp.attributes()}
		}
		rels["components"] = map[string]any{"data": cs}
	}
	body := map[string]any{"data": map[string]any{"type": "machines", "attributes": a, "relationships": rels}}
	return c.machine(ctx, request{method: http.MethodPost, path: "/machines", body: body})
}

// Machine reads a machine by id or fingerprint.
func (c *Client) Machine(ctx context.Context, idOrFingerprint string) (*Machine, error) {
	return c.machine(ctx, request{method: http.MethodGet, path: "/machines/" + esc(idOrFingerprint)})
}

// PingMachine sends a machine heartbeat (POST /machines/{id}/actions/ping).
func (c *Client) PingMachine(ctx context.Context, idOrFingerprint string) (*Machine, error) {
	return c.machine(ctx, request{method: http.MethodPost, path: "/machines/" + esc(idOrFingerprint) + "/actions/ping"})
}

func (c *Client) machine(ctx context.Context, r request) (*Machine, error) {
	d, err := c.doc(ctx, r)
	if err != nil {
		return nil, err
	}
	res, err := d.one("machines")
	if err != nil {
		return nil, err
	}
	return toMachine(res)
}

// LicenseMachines lists a license's machines.
func (c *Client) LicenseMachines(ctx context.Context, licenseID string) ([]Machine, error) {
	rs, err := c.list(ctx, "/licenses/"+esc(licenseID)+"/machines", "machines")
	if err != nil {
		return nil, err
	}
	out := make([]Machine, 0, len(rs))
	for i := range rs {
		m, err := toMachine(&rs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *m)
	}
	return out, nil
}

// DeactivateMachine deletes a machine (DELETE /machines/{id}).
func (c *Client) DeactivateMachine(ctx context.Context, idOrFingerprint string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/machines/" + esc(idOrFingerprint)})
	return err
}

// CheckoutMachine checks out a machine file
// (POST /machines/{id}/actions/check-out).
func (c *Client) CheckoutMachine(ctx context.Context, idOrFingerprint string, o CheckoutOptions) (*Checkout, error) {
	co, err := c.checkout(ctx, "/machines/"+esc(idOrFingerprint)+"/actions/check-out", "machine-files", o)
	if err != nil {
		return nil, err
	}
	if err := checkCheckout(co, "machine", idOrFingerprint); err != nil {
		return nil, err
	}
	return co, nil
}

func (c *Client) checkout(ctx context.Context, path, typ string, o CheckoutOptions) (*Checkout, error) {
	meta := map[string]any{}
	if o.Algorithm != "" {
		meta["algorithm"] = o.Algorithm
	} else if o.Encrypt {
		meta["encrypt"] = true
	}
	switch {
	case o.NoExpiry:
		meta["ttl"] = nil
	case o.TTL > 0:
		meta["ttl"] = int64(o.TTL / time.Second)
	}
	if len(o.Include) > 0 {
		meta["include"] = o.Include
	}
	d, err := c.doc(ctx, request{method: http.MethodPost, path: path, body: map[string]any{"meta": meta}})
	if err != nil {
		return nil, err
	}
	r, err := d.one(typ)
	if err != nil {
		return nil, err
	}
	var a struct {
		Certificate string     `json:"certificate"`
		Algorithm   string     `json:"algorithm"`
		TTL         *int       `json:"ttl"`
		Expiry      *time.Time `json:"expiry"`
		Issued      time.Time  `json:"issued"`
	}
	if err := attrs(r, &a); err != nil {
		return nil, err
	}
	if a.Certificate == "" {
		return nil, malformed("%s without certificate", typ)
	}
	return &Checkout{Certificate: []byte(a.Certificate), Algorithm: a.Algorithm, Issued: a.Issued, Expiry: a.Expiry, TTL: a.TTL,
		MachineID: r.relID("machine"), LicenseID: r.relID("license")}, nil
}

// MachineComponents lists a machine's components.
func (c *Client) MachineComponents(ctx context.Context, machineID string) ([]Component, error) {
	rs, err := c.list(ctx, "/machines/"+esc(machineID)+"/components", "components")
	if err != nil {
		return nil, err
	}
	out := make([]Component, 0, len(rs))
	for i := range rs {
		cp, err := toComponent(&rs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *cp)
	}
	return out, nil
}

// AddComponent adds a component to a machine (POST /components).
func (c *Client) AddComponent(ctx context.Context, machineID string, p ComponentParams) (*Component, error) {
	body := map[string]any{"data": map[string]any{
		"type": "components", "attributes": p.attributes(),
		"relationships": map[string]any{"machine": rel("machines", machineID)},
	}}
	d, err := c.doc(ctx, request{method: http.MethodPost, path: "/components", body: body})
	if err != nil {
		return nil, err
	}
	r, err := d.one("components")
	if err != nil {
		return nil, err
	}
	return toComponent(r)
}

// SpawnProcess creates a process on a machine (POST /processes).
func (c *Client) SpawnProcess(ctx context.Context, machineID, pid string, metadata map[string]any) (*Process, error) {
	a := map[string]any{"pid": pid}
	if metadata != nil {
		a["metadata"] = metadata
	}
	body := map[string]any{"data": map[string]any{
		"type": "processes", "attributes": a,
		"relationships": map[string]any{"machine": rel("machines", machineID)},
	}}
	p, err := c.process(ctx, request{method: http.MethodPost, path: "/processes", body: body})
	if err != nil {
		return nil, err
	}
	if err := checkSpawn(p, machineID, pid, metadata); err != nil {
		return nil, err
	}
	return p, nil
}

// Process reads a process by id.
func (c *Client) Process(ctx context.Context, id string) (*Process, error) {
	return c.processID(ctx, id, request{method: http.MethodGet, path: "/processes/" + esc(id)})
}

// PingProcess sends a process heartbeat (POST /processes/{id}/actions/ping).
func (c *Client) PingProcess(ctx context.Context, id string) (*Process, error) {
	return c.processID(ctx, id, request{method: http.MethodPost, path: "/processes/" + esc(id) + "/actions/ping"})
}

// processID is process for a request about process id: the answer must be
// about id.
func (c *Client) processID(ctx context.Context, id string, r request) (*Process, error) {
	p, err := c.process(ctx, r)
	if err != nil {
		return nil, err
	}
	if err := checkProcessID(p, id); err != nil {
		return nil, err
	}
	return p, nil
}

// KillProcess deletes a process (DELETE /processes/{id}).
func (c *Client) KillProcess(ctx context.Context, id string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: "/processes/" + esc(id)})
	return err
}

func (c *Client) process(ctx context.Context, r request) (*Process, error) {
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	d, err := decodeDocument(resp.body)
	if err != nil {
		return nil, err
	}
	res, err := d.one("processes")
	if err != nil {
		return nil, err
	}
	p, err := toProcess(res)
	if err == nil {
		p.Signed = resp.signed
	}
	return p, err
}

// MachineProcesses lists a machine's processes.
func (c *Client) MachineProcesses(ctx context.Context, machineID string) ([]Process, error) {
	rs, err := c.list(ctx, "/machines/"+esc(machineID)+"/processes", "processes")
	if err != nil {
		return nil, err
	}
	out := make([]Process, 0, len(rs))
	for i := range rs {
		p, err := toProcess(&rs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *p)
	}
	return out, nil
}
