package devserver

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFlowProcessesAndLimits(t *testing.T) {
	s := newTestServer(t, Options{})
	d := demo(t, s, DemoOptions{MaxProcesses: intp(2)})
	c := newClient(t, s, licenseAuth(d.License.Key))

	mid := c.activate(d.License.ID, "fp-1", "cpu-1", "disk-1")
	p1 := c.spawn(mid, "101")
	if p1.Status != 201 || p1.str("data", "attributes", "status") != "ALIVE" {
		t.Fatalf("spawn: %d %s", p1.Status, p1.Raw)
	}
	if got := p1.get("data", "attributes", "interval"); got != float64(600) {
		t.Errorf("interval = %v, want 600", got)
	}
	if r := c.spawn(mid, "101"); r.Status != 422 || r.code() != "PID_TAKEN" {
		t.Errorf("dup pid: %d %s", r.Status, r.Raw)
	}
	if r := c.spawn(mid, "102"); r.Status != 201 {
		t.Fatalf("spawn 2: %d %s", r.Status, r.Raw)
	}
	r := c.spawn(mid, "103")
	if r.Status != 422 || r.code() != "MACHINE_PROCESS_LIMIT_EXCEEDED" || r.detail() != "process count has exceeded maximum allowed for machine (2)" {
		t.Fatalf("limit: %d %s", r.Status, r.Raw)
	}
	if p := r.get("errors", 0, "source", "pointer"); p != "/data" {
		t.Errorf("pointer = %v", p)
	}
	pid := p1.str("data", "id")
	if r := c.do("POST", "/processes/"+pid+"/actions/ping", nil); r.Status != 200 {
		t.Fatalf("ping: %d %s", r.Status, r.Raw)
	}
	if r := c.do("DELETE", "/processes/"+pid, nil); r.Status != 204 || len(r.Raw) != 0 {
		t.Fatalf("kill: %d %s", r.Status, r.Raw)
	}
	if r := c.spawn(mid, "103"); r.Status != 201 {
		t.Fatalf("spawn after kill: %d %s", r.Status, r.Raw)
	}
	if r := c.do("GET", "/processes?machine="+mid, nil); len(r.get("data").([]any)) != 2 {
		t.Errorf("list: %s", r.Raw)
	}
	if r := c.do("POST", "/processes/"+pid+"/actions/ping", nil); r.Status != 404 || r.code() != "NOT_FOUND" {
		t.Errorf("ping killed: %d %s", r.Status, r.Raw)
	}
	if n := len(s.Processes()); n != 2 {
		t.Errorf("Processes() = %d", n)
	}
	if n := len(s.Components()); n != 2 {
		t.Errorf("Components() = %d", n)
	}
	st := s.Stats()
	if st.Routes["POST /processes"] != 5 || st.Routes["POST /processes/{id}/actions/ping"] != 2 {
		t.Errorf("stats: %+v", st.Routes)
	}
}

func TestLeasingStrategies(t *testing.T) {
	for _, tc := range []struct {
		leasing, detail string
	}{
		{"PER_LICENSE", "process count has exceeded maximum allowed for license (2)"},
		{"PER_USER", "process count has exceeded maximum allowed for user (2)"},
	} {
		t.Run(tc.leasing, func(t *testing.T) {
			s := newTestServer(t, Options{})
			d := demo(t, s, DemoOptions{MaxProcesses: intp(2), Leasing: tc.leasing})
			c := newClient(t, s, licenseAuth(d.License.Key))
			m1 := c.activate(d.License.ID, "a")
			m2 := c.activate(d.License.ID, "b")
			if r := c.spawn(m1, "1"); r.Status != 201 {
				t.Fatal(r.Status)
			}
			if r := c.spawn(m2, "1"); r.Status != 201 {
				t.Fatal(r.Status)
			}
			r := c.spawn(m2, "2")
			if r.Status != 422 || r.code() != "MACHINE_PROCESS_LIMIT_EXCEEDED" || r.detail() != tc.detail {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
		})
	}
}

func TestOverageAndMachineLimit(t *testing.T) {
	s := newTestServer(t, Options{})
	d := demo(t, s, DemoOptions{MaxMachines: intp(2), MaxProcesses: intp(2), OverageStrategy: "ALLOW_2X_OVERAGE"})
	c := newClient(t, s, licenseAuth(d.License.Key))
	var mids []string
	for _, fp := range []string{"a", "b", "c", "d"} {
		mids = append(mids, c.activate(d.License.ID, fp))
	}
	r := c.do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": "e"}, map[string]any{"license": ref("licenses", d.License.ID)}))
	if r.Status != 422 || r.code() != "MACHINE_LIMIT_EXCEEDED" || r.detail() != "machine count has exceeded maximum allowed for license (2)" {
		t.Fatalf("%d %s", r.Status, r.Raw)
	}
	for i := range 4 {
		if r := c.spawn(mids[0], string(rune('0'+i))); r.Status != 201 {
			t.Fatalf("spawn %d: %s", i, r.Raw)
		}
	}
	if r := c.spawn(mids[0], "x"); r.code() != "MACHINE_PROCESS_LIMIT_EXCEEDED" {
		t.Fatalf("%s", r.Raw)
	}
	r = c.do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": "a"}, map[string]any{"license": ref("licenses", d.License.ID)}))
	if r.code() != "FINGERPRINT_TAKEN" || r.get("errors", 0, "source", "pointer") != "/data/attributes/fingerprint" {
		t.Fatalf("%s", r.Raw)
	}
}

func TestAuthentication(t *testing.T) {
	s := newTestServer(t, Options{})
	d := demo(t, s, DemoOptions{})
	tokenOnly := s.CreatePolicy(PolicySpec{ProductID: d.Product.ID, Floating: true})
	l2 := s.CreateLicense(LicenseSpec{PolicyID: tokenOnly.ID})
	c := newClient(t, s, "")
	for _, tc := range []struct {
		auth   string
		status int
		code   string
	}{
		{"", 401, "TOKEN_MISSING"},
		{licenseAuth("nope"), 401, "LICENSE_INVALID"},
		{licenseAuth(l2.Key), 403, "LICENSE_NOT_ALLOWED"},
		{bearerAuth(newID()), 401, "TOKEN_FORMAT_INVALID"},
		{bearerAuth("admin-deadbeef"), 401, "TOKEN_INVALID"},
		{licenseAuth(d.License.Key), 200, ""},
		{bearerAuth(s.AdminToken()), 200, ""},
		{bearerAuth(s.CreateToken("product", d.Product.ID)), 200, ""},
	} {
		r := c.with(tc.auth).do("GET", "/licenses/"+d.License.ID, nil)
		if r.Status != tc.status || r.code() != tc.code {
			t.Errorf("auth %q: %d %s", tc.auth, r.Status, r.Raw)
		}
		if tc.status == 401 && r.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("auth %q: no WWW-Authenticate", tc.auth)
		}
	}
	// A license bearer cannot see another license: Keygen scopes the
	// lookup by the bearer, so it is 404 (licenses_controller.rb set_license).
	if r := c.with(licenseAuth(d.License.Key)).do("GET", "/licenses/"+l2.ID, nil); r.Status != 404 {
		t.Errorf("cross license: %d", r.Status)
	}
	s.UpdateLicense(d.License.ID, func(l *License) { l.Suspended = true })
	if r := c.with(licenseAuth(d.License.Key)).do("GET", "/me", nil); r.code() != "LICENSE_SUSPENDED" {
		t.Errorf("suspended: %s", r.Raw)
	}
	// Unknown account: 404, unsigned.
	c.noVerify = true
	r := c.do("GET", "http://devserver.invalid/v1/accounts/nope/me", nil)
	if r.Status != 404 || r.Header.Get("Keygen-Signature") != "" {
		t.Errorf("unknown account: %d %v", r.Status, r.Header)
	}
}

// decodeCertificate parses and verifies a certificate with raw crypto and
// decrypts it when needed; it shares no code with the server.
func decodeCertificate(t *testing.T, cert, kind string, pub ed25519.PublicKey, secret string) (alg string, payload map[string]any) {
	t.Helper()
	label := strings.ToUpper(kind) + " FILE"
	if !strings.HasPrefix(cert, "-----BEGIN "+label+"-----\n") || !strings.HasSuffix(cert, "-----END "+label+"-----\n") {
		t.Fatalf("bad armor: %q", cert)
	}
	body := strings.TrimSuffix(strings.TrimPrefix(cert, "-----BEGIN "+label+"-----\n"), "-----END "+label+"-----\n")
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	for i, l := range lines {
		if (i < len(lines)-1 && len(l) != 60) || len(l) > 60 || len(l) == 0 {
			t.Fatalf("line %d has %d chars", i, len(l))
		}
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(lines, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(raw), `{"enc":"`) || !strings.Contains(string(raw), `","sig":"`) || !strings.Contains(string(raw), `","alg":"`) {
		t.Fatalf("envelope key order: %s", raw)
	}
	var env struct{ Enc, Sig, Alg string }
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	sig, err := base64.StdEncoding.DecodeString(env.Sig)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(env.Alg, "+ed25519") && !ed25519.Verify(pub, []byte(kind+"/"+env.Enc), sig) {
		t.Fatalf("certificate signature does not verify")
	}
	var plain []byte
	if strings.HasPrefix(env.Alg, "aes-256-gcm+") {
		parts := strings.Split(env.Enc, ".")
		if len(parts) != 3 {
			t.Fatalf("enc has %d parts", len(parts))
		}
		ct, _ := base64.StdEncoding.DecodeString(parts[0])
		iv, _ := base64.StdEncoding.DecodeString(parts[1])
		tag, _ := base64.StdEncoding.DecodeString(parts[2])
		if len(iv) != 12 || len(tag) != 16 {
			t.Fatalf("iv %d tag %d", len(iv), len(tag))
		}
		key := sha256.Sum256([]byte(secret))
		block, _ := aes.NewCipher(key[:])
		gcm, _ := cipher.NewGCM(block)
		plain, err = gcm.Open(nil, iv, append(ct, tag...), nil)
		if err != nil {
			t.Fatalf("decrypt: %v", err)
		}
	} else {
		plain, err = base64.StdEncoding.DecodeString(env.Enc)
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := json.Unmarshal(plain, &payload); err != nil {
		t.Fatal(err)
	}
	return env.Alg, payload
}

func TestCheckoutCertificates(t *testing.T) {
	now := time.Date(2026, 1, 31, 12, 0, 0, 0, time.UTC)
	s := newTestServer(t, Options{Now: func() time.Time { return now }})
	d := demo(t, s, DemoOptions{})
	c := newClient(t, s, licenseAuth(d.License.Key))
	mid := c.activate(d.License.ID, "fp-cert", "comp-a")
	pub, _ := hex.DecodeString(s.PublicKeyHex())

	// Machine file: encrypted, includes, default TTL (same day next month, clamped).
	r := c.do("POST", "/machines/"+mid+"/actions/check-out", map[string]any{"meta": map[string]any{"encrypt": true, "include": []string{"license", "license.entitlements", "components"}}})
	if r.Status != 200 || r.str("data", "type") != "machine-files" {
		t.Fatalf("%d %s", r.Status, r.Raw)
	}
	alg, p := decodeCertificate(t, r.str("data", "attributes", "certificate"), "machine", pub, d.License.Key+"fp-cert")
	if alg != "aes-256-gcm+ed25519" || r.str("data", "attributes", "algorithm") != alg {
		t.Errorf("alg %q", alg)
	}
	if got := walk(p, "meta", "expiry"); got != "2026-02-28T12:00:00.000Z" {
		t.Errorf("expiry %v", got)
	}
	if got := walk(p, "meta", "ttl"); got != float64(2629746) {
		t.Errorf("ttl %v", got)
	}
	if walk(p, "data", "attributes", "fingerprint") != "fp-cert" {
		t.Errorf("data: %v", walk(p, "data"))
	}
	types := map[string]int{}
	for _, inc := range walk(p, "included").([]any) {
		types[walk(inc, "type").(string)]++
	}
	if types["licenses"] != 1 || types["entitlements"] != 2 || types["components"] != 1 {
		t.Errorf("included %v", types)
	}

	// License file via GET raw form, ttl from the query, unencrypted.
	r = c.do("GET", "/licenses/"+d.License.ID+"/actions/check-out?ttl=31536000&include=entitlements", nil)
	if r.Status != 200 || r.Header.Get("Content-Type") != "application/octet-stream" ||
		r.Header.Get("Content-Disposition") != `attachment; filename="`+d.License.ID+`.lic"` {
		t.Fatalf("%d %v", r.Status, r.Header)
	}
	alg, p = decodeCertificate(t, string(r.Raw), "license", pub, "")
	if alg != "base64+ed25519" {
		t.Errorf("alg %q", alg)
	}
	// 31536000 s = 11 months + 4 weeks + 2 days + 4:39:54 by the calendar.
	want := time.Date(2026, 12, 31, 12, 0, 0, 0, time.UTC).AddDate(0, 0, 30).Add(4*time.Hour + 39*time.Minute + 54*time.Second)
	if got := walk(p, "meta", "expiry"); got != want.Format("2006-01-02T15:04:05.000Z") {
		t.Errorf("expiry %v want %v", got, want)
	}

	// ttl null: no expiry.
	r = c.do("POST", "/licenses/"+d.License.ID+"/actions/check-out", map[string]any{"meta": map[string]any{"ttl": nil, "encrypt": true}})
	_, p = decodeCertificate(t, r.str("data", "attributes", "certificate"), "license", pub, d.License.Key)
	if walk(p, "meta", "expiry") != nil || walk(p, "meta", "ttl") != nil || r.get("data", "attributes", "expiry") != nil {
		t.Errorf("null ttl: %v", walk(p, "meta"))
	}
	if _, has := p["included"]; has {
		t.Errorf("included present without includes")
	}

	for _, tc := range []struct{ query, code, param string }{
		{"?ttl=60", "CHECKOUT_TTL_INVALID", "ttl"},
		{"?algorithm=rot13+ed25519", "CHECKOUT_ALGORITHM_INVALID", "algorithm"},
		{"?algorithm=base64+md5", "CHECKOUT_ALGORITHM_INVALID", "algorithm"},
		{"?include=secrets", "CHECKOUT_INCLUDE_INVALID", "include"},
	} {
		r := c.do("GET", "/licenses/"+d.License.ID+"/actions/check-out"+tc.query, nil)
		if r.Status != 400 || r.code() != tc.code || r.get("errors", 0, "source", "parameter") != tc.param {
			t.Errorf("%s: %d %s", tc.query, r.Status, r.Raw)
		}
	}
}

func TestCalendarAdd(t *testing.T) {
	base := time.Date(2022, 5, 24, 22, 14, 5, 990e6, time.UTC)
	if got := calendarAdd(base, 2629746); !got.Equal(time.Date(2022, 6, 24, 22, 14, 5, 990e6, time.UTC)) {
		t.Errorf("month: %v", got)
	}
	if got := calendarAdd(time.Date(2024, 1, 31, 0, 0, 0, 0, time.UTC), 2629746); !got.Equal(time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("clamp: %v", got)
	}
	if got := calendarAdd(base, 3600); !got.Equal(base.Add(time.Hour)) {
		t.Errorf("hour: %v", got)
	}
	if got := calendarAdd(time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), 31556952); !got.Equal(time.Date(2025, 2, 28, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("year: %v", got)
	}
}

func TestListenAndSignatureHost(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := demo(t, s, DemoOptions{})
	c := newClient(t, s, licenseAuth(d.License.Key))
	c.hc = &http.Client{}
	c.base = s.URL() + "/v1/accounts/" + s.AccountID()
	// do() verifies with host = hostname without port.
	r := c.do("GET", "/me", nil)
	if r.Status != 200 || r.str("data", "id") != d.License.ID {
		t.Fatalf("%d %s", r.Status, r.Raw)
	}
	c.noVerify = true
	if r := c.do("GET", s.URL()+"/v1/ping", nil); r.Status != 200 {
		t.Fatalf("ping %d", r.Status)
	}
}

// TestConcurrentClients hammers spawn/ping/kill from many goroutines; run
// with -race. The limit must hold exactly under contention.
func TestConcurrentClients(t *testing.T) {
	s := newTestServer(t, Options{DisableRateLimit: true, CullInterval: time.Millisecond})
	d := demo(t, s, DemoOptions{MaxProcesses: intp(5)})
	c := newClient(t, s, licenseAuth(d.License.Key))
	mid := c.activate(d.License.ID, "fp")
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				r := c.spawn(mid, fmt.Sprintf("%d-%d", g, i))
				if r.Status == 201 {
					mu.Lock()
					created++
					mu.Unlock()
					id := r.str("data", "id")
					c.do("POST", "/processes/"+id+"/actions/ping", nil)
					if i%2 == 0 {
						c.do("DELETE", "/processes/"+id, nil)
					}
				} else if r.code() != "MACHINE_PROCESS_LIMIT_EXCEEDED" {
					t.Errorf("spawn: %d %s", r.Status, r.Raw)
				}
			}
		}()
	}
	wg.Wait()
	if n := len(s.Processes()); n > 5 {
		t.Fatalf("%d processes exceed the limit", n)
	}
	if created == 0 {
		t.Fatal("nothing spawned")
	}
}
