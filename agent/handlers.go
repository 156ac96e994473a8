package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/internal/procwatch"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// registerHandlers fills the agent's method table; it is the only one the
// agent's server answers from (ipc has no built-in methods).
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
		if err := checkLeaseMetadata(p.Metadata); err != nil {
			return nil, err
		}
		res, err := a.acquire(ctx, p)
		if err != nil {
			return nil, err
		}
		return a.withEvidence(ctx, res, p.Confirm)
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
	m.Register(ipc.MethodUse, ipc.PermAny, a.handleUse)
	m.Register(ipc.MethodCheckout, ipc.PermAdmin, func(ctx context.Context, _ json.RawMessage) (any, error) {
		if err := a.needReady(); err != nil {
			return nil, err
		}
		return a.handleCheckout(ctx)
	})
}

// handleCheckout checks out a fresh machine file and answers with the
// status after the sync that follows it. Keygen unreachable takes the path
// of any failed sync: the state goes offline and the error says Keygen is
// unreachable; a refusal updates the state (observeAnswer) before the error.
func (a *Agent) handleCheckout(ctx context.Context) (any, error) {
	v := a.view()
	if !v.Online || v.License == nil {
		if err := a.requestSync(ctx); err != nil {
			return nil, syncError(err)
		}
		v = a.view()
	}
	if v.License == nil || !v.Valid {
		return nil, ipc.Errorf(ipc.CodeLicenseInvalid, "cannot check out a machine file: %s", v.Detail)
	}
	if a.licenseOnly() {
		return a.checkoutLicenseOnly(ctx) // a license file, not a machine file (licenseonly.go)
	}
	if err := a.ensureCertificate(ctx, v.License, true); err != nil {
		if offline(err) {
			a.goOffline(err)
			a.wakeLicenseLoop()
		}
		return nil, syncError(err)
	}
	if err := a.requestSync(ctx); err != nil {
		return nil, syncError(err)
	}
	return a.status(), nil
}

// syncError maps the error of a sync or of a call made in its stead.
func syncError(err error) error {
	if offline(err) {
		return ipc.Errorf(ipc.CodeOfflineExpired, "Keygen is unreachable: %v", err)
	}
	return mapKeygenError(err)
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

// handleHello answers agent.hello. The server has already checked the
// requested protocol version (UNSUPPORTED_VERSION) before it runs; the
// capabilities are the methods this agent serves.
func (a *Agent) handleHello(ctx context.Context, _ json.RawMessage) (any, error) {
	return &ipc.HelloResult{Protocol: ipc.ProtocolVersion, AgentVersion: Version, Capabilities: a.mux.Methods(),
		State: string(a.view().State)}, nil
}

// handleActivate stores a new license key and activates this machine with
// it, answering with the resulting status. A key other than the current one
// is vetted first (validated, and this machine activated for it when it
// needs that): a key Keygen refuses, or an unreachable Keygen, changes
// nothing and the current license keeps running.
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
	if p.Key != a.licenseKey() {
		token := p.Token
		if token == "" {
			token = a.bearerToken()
		}
		vet := a.vetKey
		if a.licenseOnly() {
			vet = a.vetKeyLicenseOnly // validates, activates nothing (licenseonly.go)
		}
		if err := vet(ctx, p.Key, token); err != nil {
			var kr *keyRefused
			switch {
			case errors.As(err, &kr):
				return nil, &ipc.Error{Code: ipc.CodeLicenseInvalid, Message: kr.Detail + "; the license key was not changed",
					Data: map[string]any{"keygen_code": kr.Code}}
			case offline(err):
				return nil, ipc.Errorf(ipc.CodeOfflineExpired, "Keygen is unreachable; the license key was not changed: %v", err)
			}
			return nil, explainKeygenError("the license key was not changed", err)
		}
	}
	// A deactivated machine stays deactivated when this activation cannot
	// reach Keygen: the error says nothing changed, so the agent must not
	// activate on its own once Keygen is back (model test, I5).
	wasDeactivated := a.deactivated()
	mark, _ := a.store.Meta(metaDeactivated)
	pending, _ := a.store.Meta(metaPendingDeactivation)
	if err := a.setLicense(p.Key, p.Token); err != nil {
		return nil, ipc.Errorf(ipc.CodeInternal, "storing the license key: %v", err)
	}
	if err := a.requestSync(ctx); err != nil && !errors.Is(err, errActivationRefused) {
		if offline(err) {
			if wasDeactivated {
				a.stayDeactivated(mark, pending)
				return nil, ipc.Errorf(ipc.CodeOfflineExpired, "Keygen is unreachable; this machine stays deactivated: %v", err)
			}
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

// stayDeactivated undoes what setLicense cleared for an activation that
// could not reach Keygen: the deactivated mark, and a deactivation queued
// offline that Keygen has not seen yet.
func (a *Agent) stayDeactivated(mark, pending []byte) {
	if len(mark) == 0 {
		mark = []byte("1")
	}
	if err := a.store.PutMeta(metaDeactivated, mark); err != nil {
		a.log.Warn("restoring the deactivated mark", "err", err)
	}
	if len(pending) > 0 {
		if err := a.store.PutMeta(metaPendingDeactivation, pending); err != nil {
			a.log.Warn("restoring the queued deactivation", "err", err)
		}
	}
	a.fire(evDeactivated, licenseView{State: StateNotActivated, Code: "DEACTIVATED",
		Detail: "this machine was deactivated: run `keygen-agent activate KEY` to activate it again"})
}

// setLicenseKey switches the agent to another license key: the machine
// record, certificates and verdict of the old one are dropped and its
// leases revoked. handleActivate vets the new key before.
func (a *Agent) setLicenseKey(key string) error {
	old := a.licenseKey()
	if err := a.store.PutMeta(metaLicenseKey, []byte(key)); err != nil {
		return err
	}
	if err := a.store.PutMeta(metaDeactivated, nil); err != nil {
		return err
	}
	if err := a.store.PutMeta(metaPendingDeactivation, nil); err != nil {
		return err
	}
	if old != key {
		a.revokeAll("changing license", "LICENSE_CHANGED", "the license key was changed")
		_ = a.store.DeleteMachine()
		_ = a.store.DeleteCertificate(certMachine)
		_ = a.store.DeleteCertificate(certLicense)
		a.clearVerdict()
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

// metaPendingDeactivation marks a deactivation accepted offline
// (deactivate --offline) that Keygen has not seen yet.
const metaPendingDeactivation = "pending_deactivation"

// handleDeactivate frees this machine's seat in Keygen. Keygen is asked
// first: when it cannot be reached nothing changes (OFFLINE_EXPIRED), unless
// the caller asked for offline, in which case the local license state is
// dropped now and the deactivation is sent once Keygen is reachable
// (finishDeactivation). A refusal changes nothing either.
func (a *Agent) handleDeactivate(ctx context.Context, raw json.RawMessage) (any, error) {
	var p ipc.DeactivateParams
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	if err := a.needReady(); err != nil {
		return nil, err
	}
	if a.licenseOnly() {
		return a.deactivateLicenseOnly(ctx) // nothing to delete in Keygen (licenseonly.go)
	}
	err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		return c.DeactivateMachine(ctx, a.fp.Load().Fingerprint)
	})
	pending := false
	switch {
	case err == nil || errors.Is(err, keygen.ErrNotFound):
	case offline(err) && p.Offline:
		pending = true
	case offline(err):
		return nil, ipc.Errorf(ipc.CodeOfflineExpired, "Keygen is unreachable; nothing was changed (`deactivate --offline` "+
			"drops this machine's license now and deactivates it in Keygen once reachable): %v", err)
	default:
		return nil, explainKeygenError("the machine was not deactivated", err)
	}
	if pending {
		if err := a.store.PutMeta(metaPendingDeactivation, []byte("1")); err != nil {
			return nil, ipc.Errorf(ipc.CodeInternal, "%v", err)
		}
	}
	// The mark holds when (trusted time): a machine file issued before it
	// cannot undo the deactivation (importCertificate).
	at, _ := a.trustedNow()
	if err := a.store.PutMeta(metaDeactivated, []byte(at.UTC().Format(time.RFC3339Nano))); err != nil {
		return nil, ipc.Errorf(ipc.CodeInternal, "%v", err)
	}
	a.revokeAll("deactivated", "DEACTIVATED", "this machine was deactivated")
	_ = a.store.DeleteMachine()
	_ = a.store.DeleteCertificate(certMachine)
	_ = a.store.DeleteCertificate(certLicense)
	a.setMachine(nil)
	if pending {
		a.log.Warn("machine deactivated locally; Keygen is unreachable, the deactivation is queued")
	} else {
		a.log.Info("machine deactivated")
	}
	_ = a.requestSync(ctx)
	return a.status(), nil
}

// finishDeactivation sends a deactivation accepted offline once Keygen can
// be reached; it returns the offline error while it cannot.
func (a *Agent) finishDeactivation(ctx context.Context) error {
	if b, err := a.store.Meta(metaPendingDeactivation); err != nil || len(b) == 0 {
		return nil
	}
	err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		return c.DeactivateMachine(ctx, a.fp.Load().Fingerprint)
	})
	switch {
	case err == nil || errors.Is(err, keygen.ErrNotFound):
		a.log.Info("queued deactivation sent to Keygen")
		return a.store.PutMeta(metaPendingDeactivation, nil)
	case offline(err):
		return err
	}
	a.log.Warn("Keygen refused the queued deactivation; keeping it queued", "err", err)
	return nil
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
	}
	if kind == certLicense && ds.License != nil {
		// Not bound to a machine: it must at least be this license's (as
		// every read checks, licensefile.go).
		if err := a.licenseFileIsOurs(ds.License); err != nil {
			return err
		}
	}
	if err := a.notOlder(kind, ds); err != nil {
		return err
	}
	reactivates := false
	if kind == certMachine && a.deactivated() {
		if err := a.notBeforeDeactivation(ds); err != nil {
			return err
		}
		reactivates = true
	}
	if kind == certMachine {
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
	if reactivates {
		if err := a.store.PutMeta(metaDeactivated, nil); err != nil {
			return err
		}
		a.log.Info("machine file issued after the deactivation imported: the machine is active again")
	}
	a.log.Info("certificate imported", "kind", kind)
	if !a.view().Online {
		a.fire(evImported, a.offlineView())
	}
	return nil
}

// notOlder refuses an import that would replace the cached file of its
// kind with a worse one. The newest signed fact wins: a file issued before
// the cached one (a stale backup, or one with a higher limit from before a
// policy change) never replaces it. And an import never shortens offline
// use: while the cached file is the one in force (unexpired, and no
// persisted refusal newer than it), a file that expires before it is
// refused. A file's TTL is what its check-out asked for, not a verdict of
// Keygen's: the model test imported a 1 h file checked out just after
// the agent's one-month file, and an hour later the agent was
// offline_expired and revoked leases well within the grace
// (I3/lease-revoked-offline_expired). Online the agent checks files out
// itself, so newer facts still arrive.
func (a *Agent) notOlder(kind string, ds *keygen.Dataset) error {
	cached := a.cachedDataset(kind)
	if cached == nil {
		return nil
	}
	if ds.Issued.Before(cached.Issued) {
		return fmt.Errorf("%w: issued %s, the cached %s file was issued %s", errOlderCertificate,
			ds.Issued.UTC().Format(time.RFC3339), kind, cached.Issued.UTC().Format(time.RFC3339))
	}
	now, _ := a.trustedNow()
	inForce := cached.Expiry == nil || cached.Expiry.After(now)
	if vr := a.verdict(); vr != nil && !cached.Issued.After(vr.At) {
		inForce = false
	}
	if inForce && ds.Expiry != nil && (cached.Expiry == nil || ds.Expiry.Before(*cached.Expiry)) {
		until := "never expires"
		if cached.Expiry != nil {
			until = "expires " + cached.Expiry.UTC().Format(time.RFC3339)
		}
		return fmt.Errorf("%w: it expires %s, the cached %s file %s", errShorterCertificate,
			ds.Expiry.UTC().Format(time.RFC3339), kind, until)
	}
	return nil
}

// notBeforeDeactivation refuses a machine file for a machine an admin
// deactivated, unless Keygen issued it after the deactivation (the machine
// was activated again, e.g. from the dashboard for an air-gapped machine)
// and no deactivation is still queued for Keygen. The newest fact wins: a
// file from before the deactivation, a backup say, would otherwise put the
// machine back to offline valid with Keygen reachable and the machine gone
// there (model test seed 199: deactivate; import-expired →
// I5/state-offline-OFFLINE-want-valid-false).
func (a *Agent) notBeforeDeactivation(ds *keygen.Dataset) error {
	if b, err := a.store.Meta(metaPendingDeactivation); err == nil && len(b) > 0 {
		return fmt.Errorf("%w: its deactivation is still queued for Keygen; run `keygen-agent activate KEY` once online", errDeactivatedMachine)
	}
	mark, _ := a.store.Meta(metaDeactivated)
	at, err := time.Parse(time.RFC3339Nano, string(mark))
	if err != nil || !ds.Issued.After(at) {
		return fmt.Errorf("%w: the machine file was issued %s, before the deactivation; run `keygen-agent activate KEY`, or import a file checked out since",
			errDeactivatedMachine, ds.Issued.UTC().Format(time.RFC3339))
	}
	return nil
}

// errDeactivatedMachine: an import for a machine deactivated since.
var errDeactivatedMachine = errors.New("this machine was deactivated")

// errOlderCertificate: an import older than the certificate in the cache.
var errOlderCertificate = errors.New("the certificate is older than the one in the cache")

// errShorterCertificate: an import that would end offline use before the
// certificate in the cache does.
var errShorterCertificate = errors.New("the certificate expires before the one in the cache")

// cachedDataset is the cached file of kind, verified (outside its time
// window is fine: expired, or issued after corrected time), or nil.
func (a *Agent) cachedDataset(kind string) *keygen.Dataset {
	rec, err := a.store.Certificate(kind)
	if err != nil || rec == nil {
		return nil
	}
	now, _ := a.trustedNow()
	ds, err := a.openCached(kind, rec.Raw, a.licenseKey(), a.fp.Load().Fingerprint, now)
	if ds == nil || (err != nil && !errors.Is(err, keygen.ErrCertExpired) && !errors.Is(err, keygen.ErrCertClockSkew)) {
		return nil
	}
	return ds
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
	return procwatch.WatchExit(ctx, pid, start)
}

func (osProcesses) Alive(pid int, start uint64) bool { return procwatch.Alive(pid, start) }
