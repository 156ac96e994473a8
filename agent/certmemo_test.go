package agent

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// The remembered open of a cached certificate answers exactly as
// keygen.OpenCertificate would: the time window is checked at every open,
// and other bytes, another key or fingerprint are opened afresh.
func TestCertMemoMatchesOpenCertificate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := activeEnv(t, envOptions{policy: devserver.PolicySpec{MaxProcesses: intp(3)}})
		rec, err := e.a.store.Certificate(certMachine)
		if err != nil || rec == nil {
			t.Fatalf("cached machine file: %v", err)
		}
		key, fp := e.a.licenseKey(), e.fp.Result().Fingerprint
		direct := func(now time.Time) (*keygen.Dataset, error) {
			return keygen.OpenCertificate(rec.Raw, keygen.OpenOptions{Keys: e.a.keys, LicenseKey: key, Fingerprint: fp, Now: now})
		}
		ds0, _ := direct(time.Now())
		if ds0 == nil || ds0.Expiry == nil {
			t.Fatal("the cached machine file does not open, or never expires")
		}
		for _, now := range []time.Time{time.Now(), ds0.Issued.Add(-10 * time.Minute), ds0.Expiry.Add(time.Second), time.Now()} {
			want, werr := direct(now)
			got, gerr := e.a.openCached(certMachine, rec.Raw, key, fp, now)
			if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
				t.Fatalf("at %v: memo %v, OpenCertificate %v", now, gerr, werr)
			}
			if !got.Issued.Equal(want.Issued) || got.Machine.ID != want.Machine.ID {
				t.Fatalf("at %v: memo dataset differs", now)
			}
		}
		if _, err := e.a.openCached(certMachine, rec.Raw, key, "other", time.Now()); err == nil {
			t.Fatal("another fingerprint opened the remembered file")
		}
		bad := append([]byte(nil), rec.Raw...)
		bad[len(bad)/2] ^= 1
		if _, err := e.a.openCached(certMachine, bad, key, fp, time.Now()); err == nil {
			t.Fatal("altered bytes opened")
		}
		if _, err := e.a.openCached(certMachine, rec.Raw, key, fp, ds0.Expiry.Add(time.Minute)); !errors.Is(err, keygen.ErrCertExpired) {
			t.Fatalf("past its expiry: %v", err)
		}
	})
}
