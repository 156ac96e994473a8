package agent

import (
	"context"
	"sync"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/leaseverify"
)

// evidenceState holds what an app gets to verify its lease (issue 18,
// docs/protocol.md "Verifying a lease"): per lease, Keygen's latest signed
// answer about the lease's process (spawn or heartbeat), and the machine
// file apps can read. Apps cannot read the agent's own machine file: it is
// encrypted with the license key, and it includes the license and its key.
// So the agent checks out a second one, unencrypted and without the
// license: it names the machine, its fingerprint and components only.
type evidenceState struct {
	mu      sync.Mutex
	proofs  map[string]*keygen.SignedResponse // by lease id
	waiters map[string]chan struct{}          // closed when a proof arrives or the lease ends
}

// evidenceAlgorithm is the machine file format apps verify: Ed25519 over
// a base64 payload, no decryption key needed.
const evidenceAlgorithm = "base64+ed25519"

// recordProof keeps proc's signed response as lease id's evidence. With
// notify, the lease's connections get lease.confirmed when this is its
// first proof (a spawn that landed after the grant).
func (a *Agent) recordProof(id string, proc *keygen.Process, notify bool) {
	if proc == nil || proc.Signed == nil || proc.Signed.Signature == "" {
		return
	}
	a.ev.mu.Lock()
	if a.ev.proofs == nil {
		a.ev.proofs = map[string]*keygen.SignedResponse{}
	}
	first := a.ev.proofs[id] == nil
	a.ev.proofs[id] = proc.Signed
	if ch := a.ev.waiters[id]; ch != nil {
		close(ch)
		delete(a.ev.waiters, id)
	}
	a.ev.mu.Unlock()
	if !notify || !first {
		return
	}
	if _, _, live := a.leases.live(id); !live {
		return
	}
	_, conns := a.leases.conns(id)
	if len(conns) == 0 {
		return
	}
	n := ipc.LeaseConfirmed{LeaseID: id, ProcessID: proc.ID, Evidence: a.evidenceFor(id)}
	for _, c := range conns {
		_ = c.Notify(ipc.NotifyLeaseConfirmed, n)
	}
}

// dropProof forgets an ended lease's evidence and wakes its waiters.
func (a *Agent) dropProof(id string) {
	a.ev.mu.Lock()
	delete(a.ev.proofs, id)
	if ch := a.ev.waiters[id]; ch != nil {
		close(ch)
		delete(a.ev.waiters, id)
	}
	a.ev.mu.Unlock()
}

// evidenceFor builds lease id's evidence object; nil if there is no lease.
func (a *Agent) evidenceFor(id string) *ipc.Evidence {
	_, lp, ok := a.leases.live(id)
	if !ok {
		return nil
	}
	procID := lp.processID
	ev := &ipc.Evidence{Status: leaseverify.StatusPending}
	if rec, _ := a.store.Certificate(cache.CertEvidence); rec != nil {
		ev.MachineFile = string(rec.Raw)
	}
	a.ev.mu.Lock()
	proof := a.ev.proofs[id]
	a.ev.mu.Unlock()
	switch {
	case proof != nil && procID != "":
		ev.Status = leaseverify.StatusSigned
		ev.Process = &leaseverify.SignedResponse{Body: proof.Body, Signature: proof.Signature, Digest: proof.Digest,
			Date: proof.Date, RequestTarget: proof.RequestTarget, Host: proof.Host}
	case procID == "" && !a.view().Online:
		ev.Status = leaseverify.StatusOffline
	}
	return ev
}

// withEvidence adds the evidence to an acquire result. With confirm, a
// pending lease waits until Keygen confirms it (or the agent goes offline,
// or ctx ends).
func (a *Agent) withEvidence(ctx context.Context, res *ipc.AcquireResult, confirm bool) (*ipc.AcquireResult, error) {
	res.Evidence = a.evidenceFor(res.LeaseID)
	if !confirm || res.Evidence == nil || res.Evidence.Status != leaseverify.StatusPending {
		return res, nil
	}
	a.ev.mu.Lock()
	if a.ev.waiters == nil {
		a.ev.waiters = map[string]chan struct{}{}
	}
	ch := a.ev.waiters[res.LeaseID]
	if ch == nil {
		ch = make(chan struct{})
		a.ev.waiters[res.LeaseID] = ch
	}
	a.ev.mu.Unlock()
	// Re-check: the proof may have landed before the waiter was set.
	if ev := a.evidenceFor(res.LeaseID); ev != nil && ev.Status != leaseverify.StatusPending {
		res.Evidence = ev
		return res, nil
	}
	if res.ProcessID != "" {
		// A process without a proof (restored after a restart, or
		// adopted from a list): read it once.
		a.goOwned(func() { a.fetchProof(res.LeaseID, res.ProcessID) })
	}
	select {
	case <-ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ev := a.evidenceFor(res.LeaseID)
	if ev == nil {
		return nil, ipc.Errorf(ipc.CodeLicenseInvalid, "the lease ended before Keygen confirmed it")
	}
	res.Evidence = ev
	if _, lp, ok := a.leases.live(res.LeaseID); ok {
		res.ProcessID, res.Offline = lp.processID, lp.offline
	}
	return res, nil
}

// fetchProof reads a lease's process to get a signed answer about it.
func (a *Agent) fetchProof(leaseID, processID string) {
	ctx, cancel := context.WithTimeout(a.ctx(), spawnWait)
	defer cancel()
	var proc *keygen.Process
	err := a.call(ctx, budget.PriorityPing, func(ctx context.Context, c *keygen.Client) error {
		var err error
		proc, err = c.Process(ctx, processID)
		return err
	})
	if err != nil {
		a.log.Debug("reading a process for its evidence", "lease", leaseID, "err", err)
		return
	}
	a.recordProof(leaseID, proc, true)
}

// ensureEvidenceFile checks out the evidence machine file when the cached
// one is missing, for another machine, or past half its life.
func (a *Agent) ensureEvidenceFile(ctx context.Context) {
	now, _ := a.trustedNow()
	mid := a.machineID()
	if mid == "" {
		return
	}
	if rec, _ := a.store.Certificate(cache.CertEvidence); rec != nil {
		ds, err := keygen.OpenCertificate(rec.Raw, keygen.OpenOptions{Keys: a.keys, Now: now})
		if err == nil && ds.Machine != nil && ds.Machine.ID == mid && !needsRefresh(ds, nil, a.now()) {
			return
		}
	}
	var co *keygen.Checkout
	err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
		var err error
		co, err = c.CheckoutMachine(ctx, mid, keygen.CheckoutOptions{
			Algorithm: evidenceAlgorithm, Include: []string{"components"}, TTL: a.config().CertificateTTL.D(),
		})
		return err
	})
	if err != nil {
		a.log.Warn("checking out the evidence machine file", "err", err)
		return
	}
	ds, err := keygen.OpenCertificate(co.Certificate, keygen.OpenOptions{Keys: a.keys, Now: now})
	if err != nil || ds.Machine == nil || ds.Machine.ID != mid {
		a.log.Warn("evidence machine file rejected", "err", err)
		return
	}
	if err := a.store.PutCertificate(cache.CertEvidence, co.Certificate, now); err != nil {
		a.log.Warn("storing the evidence machine file", "err", err)
	}
}
