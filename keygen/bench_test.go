package keygen

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// BenchmarkOpenMachineFile measures parse + Ed25519 verify + AES-GCM decrypt
// + JSON:API decode of a typical machine file.
func BenchmarkOpenMachineFile(b *testing.B) {
	s := testSigners(b)
	exp := t0.Add(30 * 24 * time.Hour)
	cert := makeCert(b, s, certSpec{kind: KindMachine, alg: "aes-256-gcm+ed25519", payload: certPayload(KindMachine, t0, &exp, ptr(2629746)), secret: testKey + testFP})
	o := OpenOptions{Keys: s.publicKeys(), LicenseKey: testKey, Fingerprint: testFP, Now: t0}
	b.SetBytes(int64(len(cert)))
	for b.Loop() {
		if _, err := OpenCertificate(cert, o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRequest compares a bare net/http GET with the client's Me (the
// same loopback server, which signs every response), with and without
// response verification.
func BenchmarkRequest(b *testing.B) {
	f := newFake(b)
	f.handle("GET /me", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"data": licenseRes(testLicenseID)})
	})
	url := f.srv.URL + "/v1/accounts/" + acct + "/me"
	hc := f.srv.Client()
	b.Run("bare-net-http", func(b *testing.B) {
		for b.Loop() {
			req, _ := http.NewRequestWithContext(b.Context(), http.MethodGet, url, nil)
			req.Header.Set("Authorization", "License "+testKey)
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	b.Run("client-no-verify", func(b *testing.B) {
		c := f.client(b, func(cfg *Config) { cfg.PublicKey = "" })
		for b.Loop() {
			if _, err := c.Me(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("client-verified", func(b *testing.B) {
		c := f.client(b)
		for b.Loop() {
			if _, err := c.Me(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
