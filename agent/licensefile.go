package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/keygen-agent/keygen-agent/agent/budget"
	"github.com/keygen-agent/keygen-agent/keygen"
)

// Where the offline state comes from (ipc.Status.OfflineSource).
const (
	sourceMachineFile = "machine_file"
	sourceLicenseFile = "license_file"
)

// licenseFileIncludes are asked for on a license check-out. Keygen's
// LicenseFilePolicy wants entitlement.read and policy.read for them; a
// refusal is retried without the last one, then without any.
var licenseFileIncludes = []string{"entitlements", "policy"}

var errForeignLicenseFile = errors.New("the license file is for another license")

// openLicenseFile reads and verifies the cached license file (imported
// with license.import, or checked out): like machine files, verified on
// every read. A license file is not bound to a machine, so it must at
// least be this license's: its key (or, when the file leaves the key out,
// its id) must be the one this agent runs under.
func (a *Agent) openLicenseFile() (*keygen.Dataset, error) {
	rec, err := a.store.Certificate(certLicense)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, errNoCertificate
	}
	now, _ := a.trustedNow()
	ds, err := keygen.OpenCertificate(rec.Raw, keygen.OpenOptions{Keys: a.keys, LicenseKey: a.licenseKey(), Now: now})
	if ds == nil {
		return nil, err
	}
	if ds.Kind != keygen.KindLicense || ds.License == nil {
		return nil, fmt.Errorf("%w: not a license file", keygen.ErrCertMalformed)
	}
	if ferr := a.licenseFileIsOurs(ds.License); ferr != nil {
		return nil, ferr
	}
	return ds, err
}

// licenseFileIsOurs checks a license file's license against the key this
// agent runs under and the license Keygen last validated.
func (a *Agent) licenseFileIsOurs(l *keygen.License) error {
	if key := a.licenseKey(); key != "" && l.Key != "" && l.Key != key {
		return errForeignLicenseFile
	}
	if vr, _ := a.store.Validation(); vr != nil && vr.LicenseID != "" && vr.LicenseID != l.ID {
		return errForeignLicenseFile
	}
	return nil
}

// ensureLicenseFile keeps a license file for offline use when the machine
// file cannot give it: its check-out failed (the license lacks
// machine.check-out, or Keygen refused it) or there is none. Keygen issues
// license files on POST /licenses/{id}/actions/check-out to a bearer with
// license.check-out (license_policy.rb check_out?; a user bearer only for
// unprotected licenses) and license.read (license_file_policy.rb show?).
// A refused check-out is not retried until the next start: the license's
// permissions do not change by asking again.
func (a *Agent) ensureLicenseFile(ctx context.Context, lic *keygen.License) {
	if lic == nil {
		return
	}
	if _, _, err := a.openMachineFile(); err == nil {
		return // the machine file is the stronger certificate: bound to this machine
	}
	if ds, err := a.openLicenseFile(); err == nil && !needsRefresh(ds, lic, a.now()) {
		return
	}
	a.checkoutLicenseFile(ctx, lic)
}

// checkoutLicenseFile checks out and stores a license file for lic (with
// entitlements and policy when Keygen allows them), unless Keygen refused
// one since the start. Used by ensureLicenseFile and by license-only mode
// (licenseonly.go).
func (a *Agent) checkoutLicenseFile(ctx context.Context, lic *keygen.License) {
	a.klc.mu.Lock()
	refused := a.klc.licenseFileRefused
	a.klc.mu.Unlock()
	if refused {
		return
	}
	cfg := a.config()
	opts := keygen.CheckoutOptions{Algorithm: cfg.Algorithm, Encrypt: true, TTL: cfg.CertificateTTL.D(),
		Include: licenseFileIncludes}
	var co *keygen.Checkout
	for {
		err := a.call(ctx, budget.PriorityRefresh, func(ctx context.Context, c *keygen.Client) error {
			var err error
			co, err = c.CheckoutLicense(ctx, lic.ID, opts)
			return err
		})
		if errors.Is(err, keygen.ErrAccessDenied) && len(opts.Include) > 0 {
			// Drop the policy first: policy.read is not among a license's
			// default permissions (license.rb), entitlement.read is.
			opts.Include = opts.Include[:len(opts.Include)-1]
			continue
		}
		if errors.Is(err, keygen.ErrAccessDenied) {
			a.klc.mu.Lock()
			a.klc.licenseFileRefused = true
			a.klc.mu.Unlock()
			a.log.Warn("Keygen refused the license file check-out (the license lacks license.check-out); " +
				"no offline use without a machine file")
			return
		}
		if err != nil {
			a.log.Warn("license file check-out failed", "err", err)
			return
		}
		break
	}
	now, _ := a.trustedNow()
	ds, err := keygen.OpenCertificate(co.Certificate, keygen.OpenOptions{Keys: a.keys, LicenseKey: a.licenseKey(), Now: now})
	if err == nil && (ds.Kind != keygen.KindLicense || ds.License == nil) {
		err = fmt.Errorf("%w: not a license file", keygen.ErrCertMalformed)
	}
	if err == nil {
		err = a.licenseFileIsOurs(ds.License)
	}
	if err != nil {
		a.log.Warn("checked-out license file rejected", "err", err)
		return
	}
	a.advanceWatermark(ds.Issued)
	if err := a.store.PutCertificate(certLicense, co.Certificate, now); err != nil {
		a.log.Warn("storing the license file", "err", err)
		return
	}
	a.log.Info("license file checked out for offline use (no machine file)")
}

// offlineCertificate is the verified certificate offline use rests on: the
// machine file when it opens (or is only expired), else a license file
// that opens. source says which; err is the machine file's error when
// neither is usable.
func (a *Agent) offlineCertificate() (ds *keygen.Dataset, source string, err error) {
	if a.licenseOnly() { // license-only mode: the license file alone (licenseonly.go)
		ds, err = a.openLicenseFile()
		return ds, sourceLicenseFile, err
	}
	ds, _, err = a.openMachineFile()
	if err == nil {
		return ds, sourceMachineFile, nil
	}
	if lds, lerr := a.openLicenseFile(); lerr == nil {
		return lds, sourceLicenseFile, nil
	}
	return ds, sourceMachineFile, err
}

// certKind is the cache slot of an offline source.
func certKind(source string) string {
	if source == sourceLicenseFile {
		return certLicense
	}
	return certMachine
}
