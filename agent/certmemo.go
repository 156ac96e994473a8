package agent

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"github.com/keygen-agent/keygen-agent/keygen"
)

// certMemo remembers the last certificate the agent opened from its cache:
// verifying, decrypting and decoding the same bytes again at every offline
// retry and revalidation cost a quarter of the agent's CPU under the model
// test. Only what does not depend on time is remembered (the verified
// dataset, for the same bytes, license key and fingerprint); the time
// window is checked again at every open, as keygen.OpenCertificate does.
// Datasets are read-only once opened (no caller modifies one).
type certMemo struct {
	mu      sync.Mutex
	entries map[string]certMemoEntry // by cache slot
}

type certMemoEntry struct {
	raw     []byte
	key, fp string
	ds      *keygen.Dataset
}

// certMaxDrift is keygen.OpenOptions' default MaxClockDrift, which every
// cached open uses.
const certMaxDrift = 5 * time.Minute

// openCached is keygen.OpenCertificate(raw, {a.keys, key, fp, now}) for the
// certificate in cache slot kind, remembered across calls.
func (a *Agent) openCached(kind string, raw []byte, key, fp string, now time.Time) (*keygen.Dataset, error) {
	m := &a.certs
	m.mu.Lock()
	e, ok := m.entries[kind]
	m.mu.Unlock()
	if ok && e.key == key && e.fp == fp && bytes.Equal(e.raw, raw) {
		return e.ds, certTimeWindow(e.ds, now)
	}
	ds, err := keygen.OpenCertificate(raw, keygen.OpenOptions{Keys: a.keys, LicenseKey: key, Fingerprint: fp, Now: now})
	if ds == nil {
		return nil, err // not genuine, not for us, malformed: nothing to remember
	}
	m.mu.Lock()
	if m.entries == nil {
		m.entries = map[string]certMemoEntry{}
	}
	m.entries[kind] = certMemoEntry{raw: bytes.Clone(raw), key: key, fp: fp, ds: ds}
	m.mu.Unlock()
	return ds, err
}

// certTimeWindow is keygen's check of a verified dataset's time window
// (Certificate.Open): issued no further in the future than the default
// drift, and not expired; the same error types and wording.
func certTimeWindow(ds *keygen.Dataset, now time.Time) error {
	if ds.Issued.Sub(now) > certMaxDrift {
		return &keygen.CertificateError{Kind: ds.Kind, Err: fmt.Errorf("%w: issued %s, now %s", keygen.ErrCertClockSkew,
			ds.Issued.Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	if ds.Expiry != nil && now.After(*ds.Expiry) {
		return &keygen.CertificateError{Kind: ds.Kind, Err: fmt.Errorf("%w: expired %s", keygen.ErrCertExpired, ds.Expiry.Format(time.RFC3339))}
	}
	return nil
}
