package agent

import (
	"context"
	"encoding/json"
	"errors"
	"sync"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// Capabilities advertised in agent.hello.
var Capabilities = []string{"leases", "offline-leases", "wait-queue", "notifications", "admin"}

func (a *Agent) registerHandlers(m *ipc.Mux) {
	m.Register(ipc.MethodHello, ipc.PermAny, a.handleHello)
	m.Register(ipc.MethodStatus, ipc.PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
		return a.status(), nil
	})
	m.Register(ipc.MethodPeer, ipc.PermAny, func(ctx context.Context, _ json.RawMessage) (any, error) {
		p, ok := ipc.PeerFromContext(ctx)
		if !ok {
			return nil, ipc.Errorf(ipc.CodeInternal, "no peer credentials on this connection")
		}
		return p, nil
	})
	m.Register(ipc.MethodAcquire, ipc.PermAny, func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p ipc.AcquireParams
		if err := decodeParams(raw, &p); err != nil {
			return nil, err
		}
		if err := checkAcquireParams(&p); err != nil {
			return nil, err
		}
		return a.acquire(ctx, p)
	})
	m.Register(ipc.MethodRelease, ipc.PermAny, func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p ipc.ReleaseParams
		if err := decodeParams(raw, &p); err != nil {
			return nil, err
		}
		if p.LeaseID == "" {
			return nil, ipc.Errorf(ipc.CodeInvalidRequest, "lease_id is required")
		}
		return struct{}{}, a.release(ctx, p.LeaseID, false)
	})
	m.Register(ipc.MethodLeasesList, ipc.PermAdmin, func(ctx context.Context, _ json.RawMessage) (any, error) {
		return a.listLeases(), nil
	})
	m.Register(ipc.MethodLeasesRelease, ipc.PermAdmin, func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p ipc.ReleaseParams
		if err := decodeParams(raw, &p); err != nil {
			return nil, err
		}
		return struct{}{}, a.release(ctx, p.LeaseID, true)
	})
	m.Register(ipc.MethodActivate, ipc.PermAdmin, a.handleActivate)
	m.Register(ipc.MethodDeactivate, ipc.PermAdmin, a.handleDeactivate)
	m.Register(ipc.MethodImport, ipc.PermAdmin, func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p ipc.ImportParams
		if err := decodeParams(raw, &p); err != nil {
			return nil, err
		}
		if err := a.needReady(); err != nil {
			return nil, err
		}
		if err := a.importCertificate([]byte(p.Certificate)); err != nil {
			return nil, &ipc.Error{Code: ipc.CodeLicenseInvalid, Message: "certificate rejected: " + err.Error(),
				Data: map[string]any{"reason": "CERTIFICATE_REJECTED"}}
		}
		return a.status(), nil
	})
	m.Register(ipc.MethodCheckout, ipc.PermAdmin, func(ctx context.Context, _ json.RawMessage) (any, error) {
		if err := a.needReady(); err != nil {
			return nil, err
		}
		v := a.view()
		if !v.Online || v.License == nil {
			if err := a.requestSync(ctx); err != nil {
				return nil, mapKeygenError(err)
			}
			v = a.view()
		}
		if v.License == nil || !v.Valid {
			return nil, ipc.Errorf(ipc.CodeLicenseInvalid, "cannot check out a machine file: %s", v.Detail)
		}
		if err := a.ensureCertificate(ctx, v.License, true); err != nil {
			return nil, mapKeygenError(err)
		}
		return a.status(), a.requestSync(ctx)
	})
}

func (a *Agent) needReady() error {
	if !a.isReady() {
		return ipc.Errorf(ipc.CodeStarting, "the agent is starting; retry shortly")
	}
	return nil
}

func decodeParams(raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return ipc.Errorf(ipc.CodeInvalidRequest, "invalid params: %v", err)
	}
	return nil
}

func (a *Agent) handleHello(ctx context.Context, raw json.RawMessage) (any, error) {
	var p ipc.HelloParams
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	if p.Protocol != 0 && p.Protocol != ipc.ProtocolVersion {
		return nil, &ipc.Error{Code: ipc.CodeUnsupportedVersion, Message: "unsupported protocol version",
			Data: map[string]any{"supported": []int{ipc.ProtocolVersion}}}
	}
	return &ipc.HelloResult{Protocol: ipc.ProtocolVersion, AgentVersion: Version, Capabilities: Capabilities,
		State: string(a.view().State)}, nil
}

// handleActivate stores a new license key and activates this machine with
// it, answering with the resulting status.
func (a *Agent) handleActivate(ctx context.Context, raw json.RawMessage) (any, error) {
	var p ipc.ActivateParams
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	if p.Key == "" {
		return nil, ipc.Errorf(ipc.CodeInvalidRequest, "key is required")
	}
	if err := a.needReady(); err != nil {
		return nil, err
	}
	if err := a.setLicenseKey(p.Key); err != nil {
		return nil, ipc.Errorf(ipc.CodeInternal, "storing the license key: %v", err)
	}
	if err := a.requestSync(ctx); err != nil && !errors.Is(err, errActivationRefused) {
		if offline(err) {
			return nil, ipc.Errorf(ipc.CodeOfflineExpired, "Keygen is unreachable: %v", err)
		}
		return nil, mapKeygenError(err)
	}
	st := a.status()
	if !st.Valid {
		return st, &ipc.Error{Code: ipc.CodeLicenseInvalid, Message: st.Detail, Data: map[string]any{"state": st.State, "keygen_code": st.Code}}
	}
	return st, nil
}

// setLicenseKey switches the agent to another license key: the machine
// record and certificates of the old one are dropped.
func (a *Agent) setLicenseKey(key string) error {
	old := a.licenseKey()
	if err := a.store.PutMeta(metaLicenseKey, []byte(key)); err != nil {
		return err
	}
	if err := a.store.PutMeta(metaDeactivated, nil); err != nil {
		return err
	}
	if old != key {
		a.revokeAll("changing license", "LICENSE_CHANGED", "the license key was changed")
		_ = a.store.DeleteMachine()
		_ = a.store.DeleteCertificate(certMachine)
		_ = a.store.DeleteCertificate(certLicense)
	}
	api, err := a.newClient(key)
	if err != nil {
		return err
	}
	a.apiMu.Lock()
	a.api = api
	a.apiMu.Unlock()
	return nil
}

// handleDeactivate frees this machine's seat in Keygen.
func (a *Agent) handleDeactivate(ctx context.Context, _ json.RawMessage) (any, error) {
	if err := a.needReady(); err != nil {
		return nil, err
	}
	a.revokeAll("deactivated", "DEACTIVATED", "this machine is being deactivated")
	err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		return c.DeactivateMachine(ctx, a.fp.Load().Fingerprint)
	})
	if err != nil && !errors.Is(err, keygen.ErrNotFound) {
		if offline(err) {
			return nil, ipc.Errorf(ipc.CodeOfflineExpired, "Keygen is unreachable; the machine was not deactivated: %v", err)
		}
		return nil, mapKeygenError(err)
	}
	if err := a.store.PutMeta(metaDeactivated, []byte("1")); err != nil {
		return nil, ipc.Errorf(ipc.CodeInternal, "%v", err)
	}
	_ = a.store.DeleteMachine()
	_ = a.store.DeleteCertificate(certMachine)
	_ = a.store.DeleteCertificate(certLicense)
	a.log.Info("machine deactivated")
	_ = a.requestSync(ctx)
	return a.status(), nil
}

// importCertificate verifies a machine or license file (air-gapped
// activation) and stores it. A machine file must be for this machine: it
// only decrypts with this license key and fingerprint.
func (a *Agent) importCertificate(data []byte) error {
	cert, err := keygen.ParseCertificate(data)
	if err != nil {
		return err
	}
	now, _ := a.trustedNow()
	ds, err := keygen.OpenCertificate(data, keygen.OpenOptions{Keys: a.keys, LicenseKey: a.licenseKey(), Fingerprint: a.fp.Load().Fingerprint, Now: now})
	if err != nil {
		return err
	}
	kind := certLicense
	if cert.Kind == keygen.CertKind("machine") {
		kind = certMachine
		if ds.Machine == nil || ds.Machine.Fingerprint != a.fp.Load().Fingerprint {
			return errors.New("machine file is for another machine")
		}
		if ds.License != nil && ds.License.Key != "" && a.licenseKey() == "" {
			_ = a.store.PutMeta(metaLicenseKey, []byte(ds.License.Key))
		}
		rec := cache.MachineRecord{ID: ds.Machine.ID, Fingerprint: ds.Machine.Fingerprint, ActivatedAt: a.now()}
		if ds.License != nil {
			rec.LicenseID = ds.License.ID
		}
		for _, c := range ds.Components {
			rec.Components = append(rec.Components, cache.ComponentRecord{Name: c.Name, Fingerprint: c.Fingerprint})
		}
		if err := a.store.PutMachine(rec); err != nil {
			return err
		}
	}
	a.advanceWatermark(ds.Issued)
	if err := a.store.PutCertificate(kind, data, now); err != nil {
		return err
	}
	a.log.Info("certificate imported", "kind", kind)
	if !a.view().Online {
		a.goOffline(nil)
	}
	return nil
}

// connSet is the set of open connections, for broadcasts.
type connSet struct {
	mu sync.Mutex
	m  map[uint64]*ipc.Conn
}

func (s *connSet) init() { s.m = map[uint64]*ipc.Conn{} }

func (s *connSet) add(c *ipc.Conn) {
	s.mu.Lock()
	s.m[c.ID()] = c
	s.mu.Unlock()
}

func (s *connSet) remove(c *ipc.Conn) {
	s.mu.Lock()
	delete(s.m, c.ID())
	s.mu.Unlock()
}

func (s *connSet) broadcast(method string, params any) {
	s.mu.Lock()
	conns := make([]*ipc.Conn, 0, len(s.m))
	for _, c := range s.m {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Notify(method, params)
	}
}

// osProcesses is the production ProcessWatcher.
type osProcesses struct{}

func (osProcesses) WatchExit(ctx context.Context, pid int, start uint64) (<-chan struct{}, error) {
	return ipc.WatchExit(ctx, pid, start)
}

func (osProcesses) Alive(pid int, start uint64) bool { return ipc.ProcessAlive(pid, start) }
