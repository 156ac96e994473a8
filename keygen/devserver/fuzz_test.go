package devserver

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
)

// FuzzRequestBody feeds arbitrary bodies to every body-taking route: the
// server must never panic or answer 5xx, and errors use the envelope.
func FuzzRequestBody(f *testing.F) {
	seeds := []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"data":null}`, `{"data":[]}`, `{"meta":{"key":1}}`,
		`{"data":{"type":"machines","attributes":{"fingerprint":"a","cores":2.5},"relationships":{"license":{"data":{"type":"licenses","id":"LICENSE"}}}}}`,
		`{"data":{"type":"machines","attributes":{"fingerprint":"b"},"relationships":{"license":{"data":{"type":"licenses","id":"LICENSE"}},"components":{"data":[{"type":"components","attributes":{"fingerprint":"c","name":"n"}},{"attributes":{"fingerprint":"c","name":"n"}}]}}}}`,
		`{"data":{"type":"processes","attributes":{"pid":"1","metadata":{"a":{"b":{"c":{"d":{"e":1}}}}}},"relationships":{"machine":{"data":{"id":7}}}}}`,
		`{"meta":{"key":"KEY","nonce":1.5,"scope":{"fingerprints":["a",1],"components":"x"}}}`,
		`{"meta":{"ttl":null,"encrypt":"yes","include":["license",2],"algorithm":"aes-256-gcm+ed25519"}}`,
		`{"data":{"type":"policies","attributes":{"maxMachines":"3","heartbeatDuration":-1},"relationships":{"product":{"data":{"id":"P"}}}}}`,
		`{"data":{"type":"licenses","attributes":{"expiry":"tomorrow"},"relationships":{"policy":{"data":{"id":"X"}}}}}`,
		"{\"data\":\x00}", "\xff\xfe", `{"data":{"type":"machines","attributes":[]}}`, `{"data":{"relationships":{"license":{"data":"x"}}}}`,
	}
	for _, s := range seeds {
		for route := range 10 {
			f.Add(uint8(route), []byte(s))
		}
	}
	sharedRSA := sync.OnceValue(func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	})
	testRSAKey = sharedRSA
	defer func() { testRSAKey = nil }()
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		// A fresh account per input keeps executions independent and fast.
		s, err := New(Options{NoListen: true, CullInterval: -1, DisableRateLimit: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		d, err := s.Demo(DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: LicensePermissions}) // speaks with the license key
		if err != nil {
			t.Fatal(err)
		}
		mid := newClient(t, s, licenseAuth(d.License.Key)).activate(d.License.ID, "fuzz-machine")
		body = bytes.ReplaceAll(body, []byte("LICENSE"), []byte(d.License.ID))
		body = bytes.ReplaceAll(body, []byte("KEY"), []byte(d.License.Key))
		routes := []struct{ method, path, auth string }{
			{"POST", "/machines", "License " + d.License.Key},
			{"POST", "/processes", "License " + d.License.Key},
			{"POST", "/components", "License " + d.License.Key},
			{"POST", "/licenses/actions/validate-key", ""},
			{"POST", "/licenses/" + d.License.ID + "/actions/validate", "License " + d.License.Key},
			{"POST", "/licenses/" + d.License.ID + "/actions/check-out", "License " + d.License.Key},
			{"POST", "/machines/" + mid + "/actions/check-out", "License " + d.License.Key},
			{"POST", "/policies", "Bearer " + s.AdminToken()},
			{"POST", "/licenses", "Bearer " + s.AdminToken()},
			{"PATCH", "/licenses/" + d.License.ID, "Bearer " + s.AdminToken()},
		}
		rt := routes[int(route)%len(routes)]
		req, _ := http.NewRequest(rt.method, "http://devserver.invalid/v1/accounts/"+s.AccountID()+rt.path, bytes.NewReader(body))
		if rt.auth != "" {
			req.Header.Set("Authorization", rt.auth)
		}
		res, err := s.Transport().RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var doc map[string]any
		if err := json.NewDecoder(res.Body).Decode(&doc); err != nil && res.StatusCode != 204 {
			t.Fatalf("%s %s: undecodable %d body: %v", rt.method, rt.path, res.StatusCode, err)
		}
		if res.StatusCode >= 500 {
			t.Fatalf("%s %s %q: %d %v", rt.method, rt.path, body, res.StatusCode, doc)
		}
		if res.StatusCode >= 400 {
			if errs, _ := doc["errors"].([]any); len(errs) == 0 {
				t.Fatalf("%d without errors: %v", res.StatusCode, doc)
			}
		}
		if res.Header.Get("Keygen-Signature") == "" {
			t.Fatalf("unsigned %d", res.StatusCode)
		}
	})
}
