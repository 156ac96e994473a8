package agent

import (
	"github.com/keygen-agent/keygen-agent/keygen"
)

// openLicenseFile reads and verifies the cached license file (imported
// with license.import, or checked out): like machine files, verified on
// every read.
func (a *Agent) openLicenseFile() (*keygen.Dataset, error) {
	rec, err := a.store.Certificate(certLicense)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, errNoCertificate
	}
	now, _ := a.trustedNow()
	return keygen.OpenCertificate(rec.Raw, keygen.OpenOptions{Keys: a.keys, LicenseKey: a.licenseKey(), Now: now})
}
