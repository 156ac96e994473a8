package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/agent/heartbeat"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/fingerprint"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// Cache meta keys owned by this file.
const (
	metaLicenseKey  = "license_key"
	metaDeactivated = "deactivated"
	certMachine     = "machine"
	certLicense     = "license"
)

// licenseKey is the key this machine runs under: one given with
// `keygen-agent activate` (kept in the cache) wins over the config file.
func (a *Agent) licenseKey() string {
	if a.store != nil {
		if b, err := a.store.Meta(metaLicenseKey); err == nil && len(b) > 0 {
			return string(b)
		}
	}
	return a.config().LicenseKey
}

func (a *Agent) deactivated() bool {
	if a.store == nil {
		return false
	}
	b, err := a.store.Meta(metaDeactivated)
	return err == nil && len(b) > 0
}

// licenseLoop validates on start and then periodically (jittered), sooner
// after a failure (with backoff), soon after a heartbeat or spawn found
// Keygen unreachable (wake), and at once when something asks through
// syncNow. afterFirst, when set, runs once the first round is done.
func (a *Agent) licenseLoop(ctx context.Context, afterFirst func()) {
	const minBackoff = 5 * time.Second
	backoff := minBackoff
	var reply chan error
	for {
		err := a.sync(ctx)
		a.enforceView()
		if afterFirst != nil {
			afterFirst()
			afterFirst = nil
		}
		if reply != nil {
			reply <- err
			reply = nil
		}
		var wait time.Duration
		a.lic.mu.Lock()
		if errors.Is(err, errAuthRefused) {
			a.lic.authRefusals++
		} else {
			a.lic.authRefusals = 0
		}
		refusals := a.lic.authRefusals
		a.lic.mu.Unlock()
		switch {
		case err != nil && offline(err):
			wait = backoff
			backoff = min(backoff*2, 5*time.Minute)
		case refusals > 0:
			// Retrying a refused credential at every revalidation only
			// repeats the refusal: back off until the credential changes.
			backoff = minBackoff
			wait = jitter(authBackoff(a.config().RevalidateInterval.D(), refusals), 0.1, a.draw("revalidate"))
		default:
			backoff = minBackoff
			wait = jitter(a.config().RevalidateInterval.D(), 0.1, a.draw("revalidate"))
		}
		t := time.NewTimer(wait)
	wait:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
				break wait
			case reply = <-a.syncNow:
				t.Stop()
				break wait
			case <-a.kick:
				t.Stop()
				break wait
			case <-a.wake:
				if wait > backoff {
					t.Reset(backoff)
					wait = backoff
				}
			}
		}
	}
}

// wakeLicenseLoop tells the license loop that Keygen looked unreachable
// elsewhere, so that it retries on its offline backoff rather than at the
// next revalidation.
func (a *Agent) wakeLicenseLoop() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// requestSync asks the license loop for an immediate sync and waits for it.
func (a *Agent) requestSync(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case a.syncNow <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func jitter(d time.Duration, share float64, rnd func() float64) time.Duration {
	return d + time.Duration((rnd()*2-1)*share*float64(d))
}

// sync brings the license view up to date with Keygen, or with the cached
// machine file when Keygen cannot be reached. It returns the error that
// stopped it (nil when the view is current).
func (a *Agent) sync(ctx context.Context) error {
	key := a.licenseKey()
	switch {
	case key == "":
		a.fire(evNoKey, licenseView{State: StateUnlicensed, Code: "NO_LICENSE_KEY",
			Detail: "no license key: run `keygen-agent activate KEY` or set license_key in the config"})
		return nil
	case a.deactivated():
		a.fire(evDeactivated, licenseView{State: StateNotActivated, Code: "DEACTIVATED",
			Detail: "this machine was deactivated: run `keygen-agent activate KEY` to activate it again"})
		return a.finishDeactivation(ctx)
	}
	syncOnce := a.syncOnce
	if a.licenseOnly() {
		syncOnce = a.syncLicenseOnly // license-only mode (licenseonly.go)
	}
	for attempt := 0; attempt < 4; attempt++ {
		again, err := syncOnce(ctx, key)
		if err != nil {
			if offline(err) {
				a.log.Warn("Keygen unreachable; using the cached machine file", "err", err)
				a.goOffline(err)
			} else if !errors.Is(err, errAuthRefused) {
				if rerr := a.refusal(err, licenseView{Online: true}); rerr != nil {
					err = rerr
				}
				a.log.Warn("license sync failed", "err", err)
			}
			return err
		}
		if !again {
			return nil
		}
	}
	return errors.New("license did not settle after activation")
}

// validateAndRecord validates key with opts, learns the clock from the
// signed answer and records the answer. A key Keygen does not know makes
// the view invalid and returns no validation: the sync ends there.
func (a *Agent) validateAndRecord(ctx context.Context, key string, opts keygen.ValidateOptions) (*keygen.Validation, error) {
	var v *keygen.Validation
	err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		var err error
		v, err = c.ValidateKey(ctx, key, opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	a.clock.observeValidation(v)
	a.markSynced()
	a.noteUsage(v.License) // the offline use limit starts from Keygen's newest count (uses.go)
	rec := cache.ValidationRecord{Valid: v.Valid, Code: v.Code, Detail: v.Detail, At: a.now()}
	if v.License != nil {
		rec.LicenseID = v.License.ID
	}
	if err := a.store.PutValidation(rec); err != nil {
		a.log.Warn("recording the validation", "err", err)
	}
	if v.License == nil || v.Code == "NOT_FOUND" {
		a.fire(evVerdict, licenseView{State: StateInvalid, Code: nonEmpty(v.Code, "NOT_FOUND"), Online: true,
			Detail: "Keygen does not know this license key"})
		return nil, nil
	}
	return v, nil
}

// verdictView is the online view a validation answer gives; a refusal's
// detail carries its remedy.
func verdictView(v *keygen.Validation) licenseView {
	view := licenseView{State: verdictState(v.Code, v.Valid), Code: v.Code, Detail: v.Detail, Valid: v.Valid, Online: true, License: v.License}
	if !view.Valid {
		view.Detail = withRemedy(v.Detail, v.Code)
	}
	return view
}

// syncOnce validates once and acts on the answer; again is true when the
// action (activation, first heartbeat) calls for another validation.
func (a *Agent) syncOnce(ctx context.Context, key string) (again bool, err error) {
	// Every scope the agent knows: a policy may require any of them
	// (license_validation_service.rb).
	opts := a.validateOptions()
	v, err := a.validateAndRecord(ctx, key, opts)
	if err != nil || v == nil {
		return false, err
	}
	base := licenseView{Online: true, License: v.License}
	switch v.Code {
	case "NO_MACHINE", "NO_MACHINES", "FINGERPRINT_SCOPE_MISMATCH":
		return true, a.refusalOr(a.activate(ctx, v.License), base)
	case "MACHINE_SCOPE_REQUIRED", "MACHINE_SCOPE_MISMATCH":
		if opts.Machine == "" {
			// Keygen checks the machine scope before the fingerprint: a
			// policy requiring it answers this before NO_MACHINE.
			return true, a.refusalOr(a.activate(ctx, v.License), base)
		}
		if v.Code == "MACHINE_SCOPE_MISMATCH" {
			// The recorded machine is gone (deleted or culled): forget it.
			_ = a.store.DeleteMachine()
			a.setMachine(nil)
			return true, nil
		}
	case "OVERDUE":
		return true, a.refusalOr(a.checkIn(ctx, v.License), base)
	case "HEARTBEAT_NOT_STARTED":
		return true, a.refusalOr(a.pingMachine(ctx), base)
	case "HEARTBEAT_DEAD":
		return true, a.refusalOr(a.reviveMachine(ctx), base)
	case "COMPONENTS_SCOPE_MISMATCH":
		a.fire(evVerdict, licenseView{State: StateHardwareChanged, Code: v.Code, Online: true, License: v.License,
			Detail:  "this machine's hardware no longer matches its activation: " + v.Detail,
			Changes: a.hardwareChanges(ctx)})
		return false, nil
	}
	view := verdictView(v)
	if !view.Valid {
		a.fire(evVerdict, view)
		return false, nil
	}
	if err := a.ensureMachine(ctx, v.License); err != nil {
		return false, a.refusalOr(err, view)
	}
	if err := a.ensureCertificate(ctx, v.License, a.takeCertRefresh()); err != nil {
		if offline(err) {
			return false, err
		}
		if rerr := a.refusal(err, view); rerr != nil {
			return false, rerr
		}
		a.log.Warn("machine file check-out failed; offline use is limited to the last good file", "err", err)
	}
	a.ensureLicenseFile(ctx, v.License)
	a.ensureEvidenceFile(ctx)
	a.fillFromCertificate(&view)
	if view.Machine == nil {
		view.Machine = a.lastMachine()
	}
	if rec, _ := a.store.Machine(); rec != nil && view.Machine == nil {
		view.Machine = &keygen.Machine{ID: rec.ID, Fingerprint: rec.Fingerprint}
	}
	if view.Policy == nil {
		view.Policy, view.PolicyAssumed = a.assumedPolicy(view.Machine, view.License), true
	}
	a.fire(evVerdict, view)
	a.scheduleMachineHeartbeat(view)
	a.replayOutbox(ctx)
	a.reconcileServer(ctx)
	a.afterSync(ctx, view)
	return false, nil
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// markSynced records a successful round trip with Keygen.
func (a *Agent) markSynced() {
	now, _ := a.trustedNow()
	a.lic.mu.Lock()
	a.lic.lastSync = now
	a.lic.mu.Unlock()
	if err := a.store.SetLastSync(now); err != nil {
		a.log.Warn("persisting last sync", "err", err)
	}
}

// activate activates this machine for the license, with its components.
func (a *Agent) activate(ctx context.Context, lic *keygen.License) error {
	if a.deactivated() {
		return nil
	}
	fp := a.fp.Load()
	p := a.activateParams(lic)
	var m *keygen.Machine
	err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		var err error
		m, err = c.ActivateMachine(ctx, p)
		return err
	})
	switch {
	case err == nil:
		a.log.Info("machine activated", "machine", m.ID, "components", len(p.Components))
	case errors.Is(err, keygen.ErrFingerprintTaken):
		// Another agent run (or a race) activated it first: adopt it.
		err = a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
			var err error
			m, err = c.Machine(ctx, fp.Fingerprint)
			return err
		})
		if errors.Is(err, keygen.ErrNotFound) || errors.Is(err, keygen.ErrAccessDenied) {
			// Taken, yet not this license's (lookups are scoped to the
			// bearer: Keygen answers 404, some servers 403): the policy's
			// uniqueness strategy spans licenses and another license holds
			// this fingerprint.
			a.fire(evVerdict, licenseView{State: StateInvalid, Code: "FINGERPRINT_TAKEN_ELSEWHERE", Online: true, License: lic,
				Detail: remedyFingerprintElsewhere})
			return errActivationRefused
		}
		if err != nil {
			return err
		}
	default:
		if rerr := a.refusal(err, licenseView{Online: true, License: lic}); rerr != nil {
			return rerr
		}
		var kerr *keygen.Error
		if errors.As(err, &kerr) {
			a.fire(evVerdict, licenseView{State: StateInvalid, Code: kerr.Code, Online: true, License: lic,
				Detail: "activation refused: " + kerr.Detail})
			return errActivationRefused
		}
		return err
	}
	a.setMachine(m)
	return a.recordMachine(m, lic.ID)
}

var errActivationRefused = errors.New("activation refused")

// activateParams describes this machine for an activation under lic.
func (a *Agent) activateParams(lic *keygen.License) keygen.ActivateParams {
	fp := a.fp.Load()
	p := keygen.ActivateParams{
		LicenseID:   lic.ID,
		Fingerprint: fp.Fingerprint,
		Hostname:    fp.Attributes.Hostname,
		Platform:    fp.Attributes.Platform,
		Cores:       fp.Attributes.Cores,
		Memory:      fp.Attributes.Memory,
		Metadata:    map[string]any{"agentVersion": Version},
	}
	for _, c := range fp.Components {
		p.Components = append(p.Components, keygen.ComponentParams{Fingerprint: c.Fingerprint, Name: c.Name})
	}
	return p
}

func (a *Agent) recordMachine(m *keygen.Machine, licenseID string) error {
	rec := cache.MachineRecord{ID: m.ID, LicenseID: licenseID, Fingerprint: m.Fingerprint, ActivatedAt: a.now()}
	for _, c := range a.fp.Load().Components {
		rec.Components = append(rec.Components, cache.ComponentRecord{Name: c.Name, Fingerprint: c.Fingerprint})
	}
	return a.store.PutMachine(rec)
}

// ensureMachine makes sure the cache knows this machine's Keygen id.
func (a *Agent) ensureMachine(ctx context.Context, lic *keygen.License) error {
	rec, err := a.store.Machine()
	if err == nil && rec != nil && rec.Fingerprint == a.fp.Load().Fingerprint && rec.LicenseID == lic.ID && rec.ID != "" &&
		a.lastMachine() != nil {
		return nil
	}
	var m *keygen.Machine
	err = a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		var err error
		m, err = c.Machine(ctx, a.fp.Load().Fingerprint)
		return err
	})
	if err != nil {
		return err
	}
	a.setMachine(m)
	return a.recordMachine(m, lic.ID)
}

// setMachine remembers the machine record read from Keygen.
func (a *Agent) setMachine(m *keygen.Machine) {
	a.lic.mu.Lock()
	a.lic.machine = m
	a.lic.mu.Unlock()
}

func (a *Agent) lastMachine() *keygen.Machine {
	a.lic.mu.Lock()
	defer a.lic.mu.Unlock()
	return a.lic.machine
}

// refusalOr is refusal(err, v) when err is an authentication or login
// refusal, else err.
func (a *Agent) refusalOr(err error, v licenseView) error {
	if err == nil {
		return nil
	}
	if rerr := a.refusal(err, v); rerr != nil {
		return rerr
	}
	return err
}

// reviveMachine answers HEARTBEAT_DEAD. A ping resurrects the machine when
// the policy's heartbeatResurrectionStrategy allows it
// (machines/actions/heartbeats_controller.rb), keeping its id, its
// processes' history and, under an activation token, the token's
// activation count. Only when Keygen answers MACHINE_HEARTBEAT_DEAD is the
// activation replaced (deactivate, then activate on the next validation).
func (a *Agent) reviveMachine(ctx context.Context) error {
	err := a.pingMachine(ctx)
	if err == nil {
		a.log.Info("machine heartbeat was dead; Keygen resurrected the machine")
		return nil
	}
	if !errors.Is(err, keygen.ErrHeartbeatDead) && !errors.Is(err, keygen.ErrNotFound) {
		return err
	}
	a.log.Warn("machine heartbeat is dead and the policy does not resurrect it; re-activating this machine")
	err = a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		return c.DeactivateMachine(ctx, a.fp.Load().Fingerprint)
	})
	if err != nil && !errors.Is(err, keygen.ErrNotFound) {
		return err
	}
	_ = a.store.DeleteMachine()
	a.setMachine(nil)
	return nil
}

func (a *Agent) machineID() string {
	rec, err := a.store.Machine()
	if err != nil || rec == nil {
		return ""
	}
	return rec.ID
}

// pingMachine sends one machine heartbeat.
func (a *Agent) pingMachine(ctx context.Context) error {
	return a.call(ctx, budget.PriorityPing, func(ctx context.Context, c *keygen.Client) error {
		m, err := c.PingMachine(ctx, a.fp.Load().Fingerprint)
		if err == nil {
			a.setMachine(m)
		}
		return err
	})
}

// scheduleMachineHeartbeat keeps the machine alive when its policy requires
// heartbeats.
func (a *Agent) scheduleMachineHeartbeat(v licenseView) {
	d := a.machineHeartbeatInterval(v)
	if d == 0 {
		a.sched.Remove(machineHeartbeatKey)
		return
	}
	if _, ok := a.sched.Due(machineHeartbeatKey); ok {
		return
	}
	a.sched.Set(machineHeartbeatKey, heartbeat.NextPing(schedNow(), d, a.config().HeartbeatFraction, 0.1, a.draw("machine")))
}

// machineHeartbeatInterval is the machine's heartbeat window, 0 when none
// is required. The machine record carries both (machine_serializer.rb:
// requireHeartbeat, heartbeatDuration, Keygen's 600 s default applied), so
// the policy, which a license may not read, is only a fallback.
func (a *Agent) machineHeartbeatInterval(v licenseView) time.Duration {
	m := v.Machine
	if m == nil || m.HeartbeatDuration == 0 {
		if lm := a.lastMachine(); lm != nil {
			m = lm
		}
	}
	required := v.License != nil && v.License.RequireHeartbeat
	if v.Policy != nil && v.Policy.RequireHeartbeat {
		required = true
	}
	if m != nil && m.RequireHeartbeat {
		required = true
	}
	if !required {
		return 0
	}
	secs := 0
	if m != nil {
		secs = m.HeartbeatDuration
	}
	if secs == 0 && v.Policy != nil && v.Policy.HeartbeatDuration != nil {
		secs = *v.Policy.HeartbeatDuration
	}
	if secs == 0 {
		secs = 600 // Keygen's HEARTBEAT_TTL (machine.rb)
	}
	return time.Duration(secs) * time.Second
}

// hardwareChanges explains a COMPONENTS_SCOPE_MISMATCH by comparing the
// components recorded at activation with the current ones.
func (a *Agent) hardwareChanges(ctx context.Context) []ipc.ComponentChange {
	var recorded []fingerprint.Component
	if rec, err := a.store.Machine(); err == nil && rec != nil {
		for _, c := range rec.Components {
			recorded = append(recorded, fingerprint.Component{Name: c.Name, Fingerprint: c.Fingerprint})
		}
	} else {
		var comps []keygen.Component
		err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
			var err error
			comps, err = c.MachineComponents(ctx, a.fp.Load().Fingerprint)
			return err
		})
		if err != nil {
			return nil
		}
		for _, c := range comps {
			recorded = append(recorded, fingerprint.Component{Name: c.Name, Fingerprint: c.Fingerprint})
		}
	}
	return componentChanges(fingerprint.Compare(recorded, a.fp.Load().Components), true)
}

// componentChanges lists a comparison's changed, missing and added
// components (and the matched ones when asked), for status and doctor.
func componentChanges(cmp fingerprint.Comparison, matched bool) []ipc.ComponentChange {
	var out []ipc.ComponentChange
	for _, group := range []struct {
		names  []string
		change string
	}{{cmp.Changed, "changed"}, {cmp.Missing, "missing"}, {cmp.Added, "added"}} {
		for _, n := range group.names {
			out = append(out, ipc.ComponentChange{Name: n, Change: group.change})
		}
	}
	if matched {
		for _, n := range cmp.Matched {
			out = append(out, ipc.ComponentChange{Name: n, Change: "matched"})
		}
	}
	return out
}

// openMachineFile reads and verifies the cached machine file. Certificates
// are verified on every read: the cache is never trusted blindly.
func (a *Agent) openMachineFile() (*keygen.Dataset, *cache.CertRecord, error) {
	rec, err := a.store.Certificate(certMachine)
	if err != nil {
		return nil, nil, err
	}
	if rec == nil {
		return nil, nil, errNoCertificate
	}
	now, _ := a.trustedNow()
	ds, err := a.openCached(certMachine, rec.Raw, a.licenseKey(), a.fp.Load().Fingerprint, now)
	return ds, rec, err
}

var errNoCertificate = errors.New("no machine file in the cache")

// ensureCertificate checks out a fresh machine file when the cached one is
// missing, unreadable, past half its life, or describes an older license.
func (a *Agent) ensureCertificate(ctx context.Context, lic *keygen.License, force bool) error {
	if !force {
		ds, _, err := a.openMachineFile()
		if err == nil && !a.certNeedsRefresh(ds, lic, a.now()) {
			return nil
		}
		switch {
		case err == nil || errors.Is(err, errNoCertificate) || errors.Is(err, keygen.ErrCertExpired):
		case errors.Is(err, keygen.ErrCertClockSkew):
			// Genuine, and issued after corrected time: the clocks
			// disagree, the file is not at fault. It stays (the newest
			// signed fact about the policy and limits) while a new one
			// is fetched.
			a.log.Warn("cached machine file issued ahead of trusted time; fetching a new one", "err", err)
		default:
			a.log.Warn("cached machine file rejected; fetching a new one", "err", err)
			_ = a.store.DeleteCertificate(certMachine)
		}
	}
	cfg := a.config()
	opts := keygen.CheckoutOptions{
		Algorithm: cfg.Algorithm,
		Encrypt:   true,
		TTL:       cfg.CertificateTTL.D(),
	}
	co, err := a.checkout(ctx, opts)
	if err != nil {
		return err
	}
	// Verify before storing: a certificate that does not open is not kept.
	now, _ := a.trustedNow()
	ds, err := keygen.OpenCertificate(co.Certificate, keygen.OpenOptions{
		Keys: a.keys, LicenseKey: a.licenseKey(), Fingerprint: a.fp.Load().Fingerprint, Now: now,
	})
	if err != nil {
		return fmt.Errorf("checked-out machine file rejected: %w", err)
	}
	a.advanceWatermark(ds.Issued)
	return a.store.PutCertificate(certMachine, co.Certificate, now)
}

func equalPtr(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// fillFromCertificate adds what only the machine file carries (entitlements,
// policy, limits, its validity) to an online view.
//
// Online, a machine file issued ahead of corrected time (Keygen's signed
// Date and the clock it stamps files with disagree) is still the newest
// signed fact about the policy and limits: it wins over an older license
// file, which would otherwise bring back a process limit raised since
// and end leases Keygen allows (model test seed 378: limit-up;
// date-skew(-47m); the fresh files rejected, the limit fell back to the
// license file's 3 and the newest lease was revoked).
func (a *Agent) fillFromCertificate(v *licenseView) {
	ds, source, err := a.offlineCertificate()
	if v.Online {
		if mds, _, merr := a.openMachineFile(); mds != nil && errors.Is(merr, keygen.ErrCertClockSkew) && (ds == nil || mds.Issued.After(ds.Issued)) {
			ds, source, err = mds, sourceMachineFile, merr
		}
	}
	if err != nil && ds == nil {
		return
	}
	if err == nil {
		v.OfflineSource = source
	}
	v.CertExpiry, v.CertIssued = ds.Expiry, ds.Issued
	v.Policy = ds.Policy
	v.Entitlements = entitlementCodes(ds.Entitlements)
	if v.License == nil {
		v.License = ds.License
	}
	if ds.Machine != nil {
		v.Machine = ds.Machine
	}
	if v.Policy == nil {
		v.Policy, v.PolicyAssumed = a.assumedPolicy(v.Machine, v.License), true
	}
}

func entitlementCodes(es []keygen.Entitlement) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.Code)
	}
	slices.Sort(out)
	return out
}

// goOffline switches to the state derived without Keygen (evUnreachable).
func (a *Agent) goOffline(cause error) {
	if cause != nil {
		a.log.Debug("offline because", "err", cause)
	}
	a.fire(evUnreachable, a.offlineView())
}

// offlineView is the license state without Keygen: the newest signed fact
// wins. Keygen's last verdict, when it refused the license or this machine
// after the cached machine file was issued, decides; otherwise the
// verified machine file does, with this machine's current components
// checked against the file's under the policy's matching strategy (as
// license_validation_service.rb does online). Offline use ends at the
// earlier of the file's expiry and OfflineGrace after the last successful
// sync, both measured on trusted time.
func (a *Agent) offlineView() (v licenseView) {
	defer a.licenseOnlyWording(&v) // license-only mode speaks of the license file (licenseonly.go)
	v = licenseView{State: StateOfflineExpired, Code: "OFFLINE_EXPIRED", Online: false}
	if a.store.Fresh() && a.lastSync().IsZero() {
		v.Detail = "Keygen is unreachable and this agent has never validated online: connect to the internet or import a machine file"
	}
	ds, source, err := a.offlineCertificate()
	if vr := a.verdict(); vr != nil && (ds == nil || !ds.Issued.After(vr.At)) {
		a.fillDataset(&v, ds)
		v.State, v.Code, v.Valid = vr.State, vr.Code, false
		v.Detail = "Keygen refused this license or machine at " + vr.At.UTC().Format(time.RFC3339) +
			" and is unreachable now: " + vr.Detail
		return v
	}
	switch {
	case errors.Is(err, errNoCertificate):
		if v.Detail == "" {
			v.Detail = "Keygen is unreachable and there is no machine file for offline use"
		}
	case errors.Is(err, keygen.ErrCertExpired):
		v.Detail = "Keygen is unreachable and the machine file has expired"
		a.fillDataset(&v, ds)
	case err != nil:
		v.Detail = "Keygen is unreachable and the cached machine file is not usable: " + err.Error()
		if errors.Is(err, keygen.ErrCertNotGenuine) || errors.Is(err, keygen.ErrCertDecrypt) || errors.Is(err, keygen.ErrCertMalformed) {
			a.log.Error("cached machine file failed verification; discarding it", "err", err)
			_ = a.store.DeleteCertificate(certKind(source))
		}
	default:
		a.fillDataset(&v, ds)
		until := time.Time{}
		if ds.Expiry != nil {
			until = *ds.Expiry
		}
		if ls := a.lastSync(); !ls.IsZero() {
			g := ls.Add(a.config().OfflineGrace.D())
			if until.IsZero() || g.Before(until) {
				until = g
			}
		} else if rec, _ := a.store.Certificate(certKind(source)); rec != nil {
			// An imported file (air-gapped activation): the grace runs from
			// the import.
			g := rec.FetchedAt.Add(a.config().OfflineGrace.D())
			if until.IsZero() || g.Before(until) {
				until = g
			}
		}
		if !until.IsZero() {
			v.OfflineUntil = &until
		}
		v.State, v.Code, v.Valid = StateOffline, "OFFLINE", true
		v.OfflineSource = source
		v.Detail = "Keygen is unreachable; running from the verified machine file"
		if source == sourceLicenseFile {
			v.Detail = "Keygen is unreachable; running from the verified license file (no machine file)"
		}
		if ds.License != nil && ds.License.Suspended {
			v.State, v.Code, v.Valid = StateSuspended, "SUSPENDED", false
			v.Detail = "the license is suspended (per the cached machine file)"
		} else if ds.License != nil && ds.License.Expiry != nil {
			now, _ := a.trustedNow()
			if !now.Before(*ds.License.Expiry) && !expiredButAllowed(ds.Policy) {
				v.State, v.Code, v.Valid = StateExpired, "EXPIRED", false
				v.Detail = "the license expired at " + ds.License.Expiry.UTC().Format(time.RFC3339)
			}
		}
		if v.Valid {
			if changes, ok := a.offlineComponentsPass(ds, v.Policy); !ok {
				v.State, v.Code, v.Valid = StateHardwareChanged, "COMPONENTS_SCOPE_MISMATCH", false
				v.Detail = "this machine's hardware no longer matches the machine file's components (checked offline " +
					"under the policy's component matching strategy): reconnect to Keygen or restore the hardware"
				v.Changes = changes
			}
		}
	}
	return v
}

// offlineComponentsPass compares this machine's components with the ones
// the machine file was issued for, as Keygen's components scope does: the
// file's components whose fingerprint is among the current ones are
// matched, and the strategy says how many of the supplied (current) ones
// must match. A file without components (the policy does not track them)
// passes.
func (a *Agent) offlineComponentsPass(ds *keygen.Dataset, pol *keygen.Policy) ([]ipc.ComponentChange, bool) {
	if ds == nil || len(ds.Components) == 0 {
		return nil, true
	}
	var recorded []fingerprint.Component
	for _, c := range ds.Components {
		recorded = append(recorded, fingerprint.Component{Name: c.Name, Fingerprint: c.Fingerprint})
	}
	current := a.fp.Load().Components
	supplied := map[string]bool{}
	for _, c := range current {
		supplied[c.Fingerprint] = true
	}
	matched := map[string]bool{}
	for _, c := range recorded {
		if supplied[c.Fingerprint] {
			matched[c.Fingerprint] = true
		}
	}
	strategy := ""
	if pol != nil {
		strategy = pol.ComponentMatchingStrategy
	}
	if fingerprint.Passes(strategy, len(matched), len(supplied)) {
		return nil, true
	}
	return componentChanges(fingerprint.Compare(recorded, current), false), false
}

func (a *Agent) fillDataset(v *licenseView, ds *keygen.Dataset) {
	if ds == nil {
		return
	}
	v.License, v.Policy, v.Machine = ds.License, ds.Policy, ds.Machine
	if v.Policy == nil {
		v.Policy, v.PolicyAssumed = a.assumedPolicy(v.Machine, v.License), true
	}
	v.Entitlements = entitlementCodes(ds.Entitlements)
	v.CertExpiry, v.CertIssued = ds.Expiry, ds.Issued
	a.advanceWatermark(ds.Issued)
}

func expiredButAllowed(p *keygen.Policy) bool {
	return p != nil && (p.ExpirationStrategy == "ALLOW_ACCESS" || p.ExpirationStrategy == "MAINTAIN_ACCESS")
}

func (a *Agent) lastSync() time.Time {
	a.lic.mu.Lock()
	defer a.lic.mu.Unlock()
	return a.lic.lastSync
}
