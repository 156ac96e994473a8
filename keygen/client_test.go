package keygen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEndpointsSuccess(t *testing.T) {
	f := newFake(t)
	var gotMu sync.Mutex
	got := map[string]map[string]any{}
	record := func(name string, r *http.Request) {
		var b map[string]any
		if r.ContentLength > 0 {
			b = readBody(t, r)
		}
		gotMu.Lock()
		got[name] = b
		gotMu.Unlock()
	}
	data := func(v any) map[string]any { return map[string]any{"data": v} }
	f.mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]any{"message": "pong"}) })
	f.handle("GET /me", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, data(licenseRes(testLicenseID))) })
	f.handle("GET /licenses/{id}", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, data(licenseRes(r.PathValue("id")))) })
	f.handle("GET /licenses/{id}/entitlements", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("page[size]") != "100" || r.URL.Query().Get("page[number]") != "1" {
			t.Errorf("entitlements query %q", r.URL.RawQuery)
		}
		writeJSON(w, 200, data([]any{entitlementRes("e1", "A"), entitlementRes("e2", "B")}))
	})
	f.handle("GET /licenses/{id}/policy", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, data(policyRes())) })
	f.handle("GET /licenses/{id}/machines", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, data([]any{machineRes("m1"), machineRes("m2")}))
	})
	f.handle("POST /machines", func(w http.ResponseWriter, r *http.Request) {
		record("activate", r)
		writeJSON(w, 201, data(machineRes(testMachineID)))
	})
	f.handle("GET /machines/{id}", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, data(machineRes(testMachineID))) })
	f.handle("DELETE /machines/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	f.handle("POST /machines/{id}/actions/ping", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, data(machineRes(testMachineID))) })
	checkout := func(typ string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			record(typ, r)
			writeJSON(w, 200, data(map[string]any{"id": "x", "type": typ, "attributes": map[string]any{
				"certificate": "-----BEGIN MACHINE FILE-----\nabc\n-----END MACHINE FILE-----\n", "algorithm": "aes-256-gcm+ed25519",
				"ttl": nil, "expiry": nil, "issued": "2026-06-01T12:00:00.000Z", "includes": []string{"license"},
			}}))
		}
	}
	f.handle("POST /machines/{id}/actions/check-out", checkout("machine-files"))
	f.handle("POST /licenses/{id}/actions/check-out", checkout("license-files"))
	f.handle("GET /machines/{id}/components", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, data([]any{componentRes("c1", "f1", "cpu")}))
	})
	f.handle("POST /components", func(w http.ResponseWriter, r *http.Request) {
		record("component", r)
		writeJSON(w, 201, data(componentRes("c2", "f2", "disk-0")))
	})
	f.handle("POST /processes", func(w http.ResponseWriter, r *http.Request) {
		record("spawn", r)
		writeJSON(w, 201, data(processRes("p1", "4242")))
	})
	f.handle("GET /processes/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, data(processRes(r.PathValue("id"), "4242")))
	})
	f.handle("POST /processes/{id}/actions/ping", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, data(processRes("p1", "4242"))) })
	f.handle("DELETE /processes/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	f.handle("GET /machines/{id}/processes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, data([]any{processRes("p1", "1"), processRes("p2", "2")}))
	})

	var infos []ResponseInfo
	var infoMu sync.Mutex
	c := f.client(t, func(cfg *Config) {
		cfg.OnResponse = func(i ResponseInfo) { infoMu.Lock(); infos = append(infos, i); infoMu.Unlock() }
	})
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Ping(ctx))
	l, err := c.Me(ctx)
	must(err)
	if l.ID != testLicenseID || l.Key != testKey || l.PolicyID != testPolicyID || l.ProductID != "prod-1" || *l.MaxProcesses != 5 ||
		l.MaxUsers != nil || l.Expiry == nil || !l.Expiry.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) || l.Metadata["tier"] != "pro" || !l.Strict {
		t.Errorf("Me = %+v", l)
	}
	l, err = c.License(ctx, "a/b c")
	must(err)
	if l.ID != "a/b c" {
		t.Errorf("License id %q (path escaping)", l.ID)
	}
	ents, err := c.LicenseEntitlements(ctx, testLicenseID)
	must(err)
	if len(ents) != 2 || ents[1].Code != "B" || ents[1].Name != "b" {
		t.Errorf("entitlements %+v", ents)
	}
	pol, err := c.LicensePolicy(ctx, testLicenseID)
	must(err)
	if pol.ComponentMatchingStrategy != "MATCH_TWO" || *pol.MaxProcesses != 5 || *pol.HeartbeatDuration != 600 || pol.Duration != nil || pol.ProcessLeasingStrategy != "PER_MACHINE" {
		t.Errorf("policy %+v", pol)
	}
	ms, err := c.LicenseMachines(ctx, testLicenseID)
	must(err)
	if len(ms) != 2 || ms[1].ID != "m2" || ms[0].LicenseID != testLicenseID {
		t.Errorf("machines %+v", ms)
	}
	m, err := c.ActivateMachine(ctx, ActivateParams{LicenseID: testLicenseID, Fingerprint: testFP, Hostname: "box.local", Platform: "linux/amd64",
		Cores: 8, Memory: 1 << 34, Metadata: map[string]any{"v": 1}, Components: []ComponentParams{{Fingerprint: "f1", Name: "cpu"}, {Fingerprint: "f2", Name: "disk-0"}}})
	must(err)
	if m.ID != testMachineID || m.Fingerprint != testFP || m.Cores != 8 || m.Memory != 17179869184 || m.HeartbeatDuration != 600 || m.LastHeartbeat == nil || m.HeartbeatStatus != "ALIVE" {
		t.Errorf("activate %+v", m)
	}
	act := got["activate"]["data"].(map[string]any)
	if act["type"] != "machines" || act["attributes"].(map[string]any)["fingerprint"] != testFP || act["attributes"].(map[string]any)["cores"] != 8.0 {
		t.Errorf("activate body %v", act)
	}
	rels := act["relationships"].(map[string]any)
	if rels["license"].(map[string]any)["data"].(map[string]any)["id"] != testLicenseID {
		t.Errorf("activate license rel %v", rels)
	}
	if cs := rels["components"].(map[string]any)["data"].([]any); len(cs) != 2 || cs[1].(map[string]any)["attributes"].(map[string]any)["name"] != "disk-0" {
		t.Errorf("activate components %v", cs)
	}
	if _, err := c.ActivateMachine(ctx, ActivateParams{LicenseID: "x", Fingerprint: "y", Components: make([]ComponentParams, 21)}); err == nil {
		t.Error("21 inline components accepted")
	}
	_, err = c.Machine(ctx, testFP)
	must(err)
	_, err = c.PingMachine(ctx, testMachineID)
	must(err)
	co, err := c.CheckoutMachine(ctx, testMachineID, CheckoutOptions{Algorithm: "aes-256-gcm+ed25519", Include: []string{"license", "license.entitlements"}, NoExpiry: true})
	must(err)
	if !strings.HasPrefix(string(co.Certificate), "-----BEGIN MACHINE FILE-----") || co.Expiry != nil || co.TTL != nil || co.Algorithm != "aes-256-gcm+ed25519" {
		t.Errorf("checkout %+v", co)
	}
	meta := got["machine-files"]["meta"].(map[string]any)
	if ttl, ok := meta["ttl"]; !ok || ttl != nil || meta["algorithm"] != "aes-256-gcm+ed25519" || len(meta["include"].([]any)) != 2 {
		t.Errorf("machine checkout meta %v", meta)
	}
	_, err = c.CheckoutLicense(ctx, testLicenseID, CheckoutOptions{Encrypt: true, TTL: 2 * time.Hour})
	must(err)
	meta = got["license-files"]["meta"].(map[string]any)
	if meta["ttl"] != 7200.0 || meta["encrypt"] != true || meta["algorithm"] != nil {
		t.Errorf("license checkout meta %v", meta)
	}
	cs, err := c.MachineComponents(ctx, testMachineID)
	must(err)
	if len(cs) != 1 || cs[0].MachineID != testMachineID || cs[0].Name != "cpu" {
		t.Errorf("components %+v", cs)
	}
	cp, err := c.AddComponent(ctx, testMachineID, ComponentParams{Fingerprint: "f2", Name: "disk-0"})
	must(err)
	if cp.ID != "c2" || got["component"]["data"].(map[string]any)["relationships"].(map[string]any)["machine"].(map[string]any)["data"].(map[string]any)["id"] != testMachineID {
		t.Errorf("component %+v %v", cp, got["component"])
	}
	p, err := c.SpawnProcess(ctx, testMachineID, "4242", map[string]any{"app": "cad"})
	must(err)
	if p.ID != "p1" || p.PID != "4242" || p.Interval != 600 || p.MachineID != testMachineID || p.LicenseID != testLicenseID || p.Metadata["app"] != "cad" {
		t.Errorf("spawn %+v", p)
	}
	if a := got["spawn"]["data"].(map[string]any)["attributes"].(map[string]any); a["pid"] != "4242" {
		t.Errorf("spawn body %v", a)
	}
	p, err = c.Process(ctx, "p9")
	must(err)
	if p.ID != "p9" {
		t.Errorf("process %+v", p)
	}
	_, err = c.PingProcess(ctx, "p1")
	must(err)
	ps, err := c.MachineProcesses(ctx, testMachineID)
	must(err)
	if len(ps) != 2 || ps[1].PID != "2" {
		t.Errorf("processes %+v", ps)
	}
	must(c.KillProcess(ctx, "p1"))
	must(c.DeactivateMachine(ctx, testMachineID))

	infoMu.Lock()
	defer infoMu.Unlock()
	if len(infos) != 19 {
		t.Fatalf("OnResponse called %d times", len(infos))
	}
	if infos[0].Verified || infos[0].Path != "/v1/ping" {
		t.Errorf("ping info %+v (must be unverified: unsigned route)", infos[0])
	}
	for _, i := range infos[1:] {
		if !i.Verified || !i.Date.Equal(t0) {
			t.Errorf("info %+v not verified with Date %v", i, t0)
		}
	}
	if i := infos[3]; !strings.Contains(i.Path, "page%5Bnumber%5D=1") {
		t.Errorf("escaped list path %q", i.Path)
	}
}

func TestRequestHeaders(t *testing.T) {
	f := newFake(t)
	var mu sync.Mutex
	var h http.Header
	f.handle("GET /me", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h = r.Header.Clone()
		mu.Unlock()
		writeJSON(w, 200, map[string]any{"data": licenseRes(testLicenseID)})
	})
	c := f.client(t, func(cfg *Config) {
		cfg.Environment, cfg.APIVersion, cfg.UserAgent, cfg.AgentVersion = "staging", "v1.8", "acme-cad/4.2", "1.0.0"
	})
	get := func(c *Client) http.Header {
		t.Helper()
		if _, err := c.Me(t.Context()); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return h
	}
	hd := get(c)
	for k, want := range map[string]string{"Authorization": "License " + testKey, "Keygen-Version": "1.8", "Keygen-Environment": "staging",
		"Accept": "application/vnd.api+json", "Keygen-Accept-Signature": `algorithm="ed25519"`} {
		if hd.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, hd.Get(k), want)
		}
	}
	if ua := hd.Get("User-Agent"); !strings.HasPrefix(ua, "acme-cad/4.2 keygen-agent/1.0.0 go/") {
		t.Errorf("User-Agent %q", ua)
	}
	if a := get(c.WithToken("tok")).Get("Authorization"); a != "Bearer tok" {
		t.Errorf("token auth %q", a)
	}
	if a := get(c.WithToken("tok").WithLicenseKey("K2")).Get("Authorization"); a != "License K2" {
		t.Errorf("WithLicenseKey auth %q", a)
	}
	c2 := f.client(t, func(cfg *Config) { cfg.Token = "tok" })
	if a := get(c2).Get("Authorization"); a != "Bearer tok" {
		t.Errorf("token wins: %q", a)
	}
}

func TestValidate(t *testing.T) {
	f := newFake(t)
	var mu sync.Mutex
	echo, dataNull := true, false
	var lastMeta map[string]any
	handler := func(w http.ResponseWriter, r *http.Request) {
		meta := readBody(t, r)["meta"].(map[string]any)
		if strings.HasSuffix(r.URL.Path, "validate-key") != (r.Header.Get("Authorization") == "") {
			t.Errorf("%s: Authorization %q", r.URL.Path, r.Header.Get("Authorization"))
		}
		mu.Lock()
		lastMeta = meta
		e, dn := echo, dataNull
		mu.Unlock()
		out := map[string]any{"ts": "2026-06-01T12:00:00.123Z", "valid": true, "code": "TOO_MANY_PROCESSES", "detail": "has too many associated processes", "scope": meta["scope"]}
		if e {
			out["nonce"] = meta["nonce"]
		} else {
			out["nonce"] = 7
		}
		var data any = licenseRes(testLicenseID)
		if dn {
			data, out["valid"], out["code"], out["detail"] = nil, false, "NOT_FOUND", "does not exist"
		}
		writeJSON(w, 200, map[string]any{"data": data, "meta": out})
	}
	f.handle("POST /licenses/actions/validate-key", handler)
	f.handle("POST /licenses/{id}/actions/validate", handler)
	c := f.client(t)
	ctx := t.Context()
	v, err := c.ValidateKey(ctx, testKey, ValidateOptions{Fingerprint: testFP, Components: []string{"a", "b"}, Entitlements: []string{"E"}, Product: "prod-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Valid || v.Code != "TOO_MANY_PROCESSES" || v.License == nil || v.License.ID != testLicenseID || v.Nonce == 0 || v.Timestamp.IsZero() {
		t.Errorf("validation %+v", v)
	}
	mu.Lock()
	scope := lastMeta["scope"].(map[string]any)
	if lastMeta["key"] != testKey || scope["fingerprint"] != testFP || len(scope["components"].([]any)) != 2 || scope["product"] != "prod-1" || scope["policy"] != nil {
		t.Errorf("validate-key meta %v", lastMeta)
	}
	mu.Unlock()
	if _, err := c.Validate(ctx, testLicenseID, ValidateOptions{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if _, has := lastMeta["scope"]; has || lastMeta["key"] != nil {
		t.Errorf("validate meta %v: empty scope must be omitted", lastMeta)
	}
	dataNull = true
	mu.Unlock()
	v, err = c.ValidateKey(ctx, "nope", ValidateOptions{})
	if err != nil || v.Valid || v.Code != "NOT_FOUND" || v.License != nil {
		t.Errorf("unknown key: %+v, %v", v, err)
	}
	mu.Lock()
	echo = false
	mu.Unlock()
	_, err = c.Validate(ctx, testLicenseID, ValidateOptions{})
	if !errors.Is(err, ErrNonceMismatch) || !errors.Is(err, ErrNotGenuine) {
		t.Errorf("nonce not echoed: %v", err)
	}
}

func TestAPIErrors(t *testing.T) {
	cases := []struct {
		status int
		code   string
		want   error
	}{
		{404, "NOT_FOUND", ErrNotFound},
		{422, "MACHINE_PROCESS_LIMIT_EXCEEDED", ErrProcessLimitExceeded},
		{422, "PID_TAKEN", ErrPIDTaken},
		{422, "PROCESS_HEARTBEAT_DEAD", ErrHeartbeatDead},
		{422, "MACHINE_HEARTBEAT_DEAD", ErrHeartbeatDead},
		{422, "FINGERPRINT_TAKEN", ErrFingerprintTaken},
		{422, "MACHINE_LIMIT_EXCEEDED", ErrMachineLimitExceeded},
		{422, "COMPONENTS_FINGERPRINT_TAKEN", ErrComponentsTaken},
		{422, "COMPONENTS_FINGERPRINT_CONFLICT", ErrComponentsTaken},
		{403, "LICENSE_SUSPENDED", ErrLicenseSuspended},
		{403, "LICENSE_EXPIRED", ErrLicenseExpired},
		{403, "LICENSE_NOT_ALLOWED", ErrLicenseNotAllowed},
		{401, "LICENSE_INVALID", ErrLicenseInvalid},
		{401, "TOKEN_INVALID", ErrTokenInvalid},
		{403, "", ErrForbidden},
		{400, "CHECKOUT_TTL_INVALID", nil},
	}
	f := newFake(t)
	var mu sync.Mutex
	var cur int
	f.handle("POST /processes", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tc := cases[cur]
		mu.Unlock()
		writeErr(w, tc.status, tc.code, "Unprocessable resource", "some detail")
	})
	c := f.client(t)
	all := []error{ErrNotFound, ErrProcessLimitExceeded, ErrPIDTaken, ErrHeartbeatDead, ErrFingerprintTaken, ErrMachineLimitExceeded,
		ErrComponentsTaken, ErrLicenseSuspended, ErrLicenseExpired, ErrLicenseNotAllowed, ErrLicenseInvalid, ErrTokenInvalid}
	for i, tc := range cases {
		mu.Lock()
		cur = i
		mu.Unlock()
		_, err := c.SpawnProcess(t.Context(), testMachineID, "1", nil)
		var e *Error
		if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code || e.Detail != "some detail" || e.Source.Pointer != "/data" || e.RequestID != "req-123" {
			t.Errorf("%s: err %#v", tc.code, err)
			continue
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: not %v", tc.code, tc.want)
		}
		for _, s := range all {
			if s != tc.want && errors.Is(err, s) {
				t.Errorf("%s: also matches %v", tc.code, s)
			}
		}
		if IsOffline(err) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrRateLimited) {
			t.Errorf("%s: API answer classified offline/unavailable", tc.code)
		}
		if !strings.Contains(err.Error(), tc.code) {
			t.Errorf("message %q", err)
		}
	}
}

func TestRateLimit(t *testing.T) {
	f := newFake(t)
	f.handle("GET /me", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-RateLimit-Window", "30s")
		h.Set("X-RateLimit-Count", "60")
		h.Set("X-RateLimit-Limit", "60")
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Reset", "1780315217")
		if r.Header.Get("Authorization") == "License limited-no-retry-after" {
			h.Set("X-RateLimit-Reset", strconv.FormatInt(t0.Add(10*time.Second+25*time.Second).Unix(), 10))
			writeErr(w, 429, "TOO_MANY_REQUESTS", "Too many requests", "")
			return
		}
		if r.Header.Get("Authorization") == "License limited" {
			h.Set("Retry-After", "17")
			writeErr(w, 429, "TOO_MANY_REQUESTS", "Too many requests", "Throttle limit has been reached for your IP address.")
			return
		}
		h.Set("X-RateLimit-Count", "12")
		h.Set("X-RateLimit-Remaining", "48")
		writeJSON(w, 200, map[string]any{"data": licenseRes(testLicenseID)})
	})
	var mu sync.Mutex
	var last ResponseInfo
	c := f.client(t, func(cfg *Config) { cfg.OnResponse = func(i ResponseInfo) { mu.Lock(); last = i; mu.Unlock() } })
	if _, err := c.Me(t.Context()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if rl := last.RateLimit; rl.Window != "30s" || rl.Count != 12 || rl.Limit != 60 || rl.Remaining != 48 || rl.Reset.Unix() != 1780315217 || rl.RetryAfter != 0 {
		t.Errorf("success rate limit %+v", rl)
	}
	mu.Unlock()
	_, err := c.WithLicenseKey("limited").Me(t.Context())
	var rle *RateLimitError
	if !errors.As(err, &rle) || rle.RetryAfter != 17*time.Second || rle.Window != "30s" || rle.Remaining != 0 || rle.Limit != 60 || rle.Status != 429 {
		t.Fatalf("429: %#v", err)
	}
	if !errors.Is(err, ErrRateLimited) || errors.Is(err, ErrUnavailable) || IsOffline(err) || errors.Is(err, ErrNotGenuine) {
		t.Errorf("429 classification wrong: %v", err)
	}
	_, err = c.WithLicenseKey("limited-no-retry-after").Me(t.Context())
	if !errors.As(err, &rle) || rle.RetryAfter != 25*time.Second {
		t.Errorf("429 without Retry-After: %v", err)
	}
	mu.Lock()
	if last.Status != 429 || last.Verified {
		t.Errorf("429 info %+v", last)
	}
	mu.Unlock()
}

func TestUnavailable(t *testing.T) {
	f := newFake(t)
	f.handle("GET /me", func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Authorization") {
		case "License 503":
			w.WriteHeader(503)
			_, _ = w.Write([]byte("<html>upstream down</html>"))
		case "License hang":
			<-r.Context().Done()
		}
	})
	c := f.client(t)
	_, err := c.WithLicenseKey("503").Me(t.Context())
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.Status != 503 || !errors.Is(err, ErrUnavailable) || !IsOffline(err) {
		t.Errorf("503: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = c.WithLicenseKey("hang").Me(ctx)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout: %v", err)
	}
	dead := f.client(t, func(cfg *Config) { cfg.BaseURL = "http://127.0.0.1:1" })
	if _, err := dead.Me(t.Context()); !errors.Is(err, ErrUnavailable) || !IsOffline(err) {
		t.Errorf("refused: %v", err)
	}
	if strings.Contains(errString(err), testKey) {
		t.Errorf("error leaks license key: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestResponseSignature(t *testing.T) {
	f := newFake(t)
	f.handle("GET /me", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"data": licenseRes(testLicenseID)})
	})
	f.handle("GET /licenses/{id}", func(w http.ResponseWriter, r *http.Request) { writeErr(w, 404, "NOT_FOUND", "Not found", "x") })
	f.handle("POST /machines", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]any{"data": "garbage"}) })
	cases := []struct {
		name   string
		tamper string
		date   time.Time
		want   error // nil: accepted
	}{
		{"valid", "", t0, nil},
		{"rsa-pss response signature", "rsa", t0, nil},
		{"missing signature", "nosig", t0, ErrNotGenuine},
		{"bad signature", "badsig", t0, ErrNotGenuine},
		{"wrong digest", "digest", t0, ErrNotGenuine},
		{"host signed with port", "port", t0, ErrNotGenuine},
		{"replayed old date", "", t0.Add(-6 * time.Minute), ErrResponseTooOld},
		{"date in window", "", t0.Add(-4 * time.Minute), nil},
		{"future date", "", t0.Add(time.Hour), ErrResponseFromFuture},
		{"future date in window", "", t0.Add(4 * time.Minute), nil},
	}
	c := f.client(t)
	for _, tc := range cases {
		f.set(tc.tamper, tc.date)
		_, err := c.Me(t.Context())
		if tc.want == nil && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.want != nil && (!errors.Is(err, tc.want) || !errors.Is(err, ErrNotGenuine) || !IsOffline(err)) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		// Signed API errors are verified too.
		_, err = c.License(t.Context(), "x")
		if tc.want == nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: signed 404: %v", tc.name, err)
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: signed 404 accepted: %v", tc.name, err)
		}
	}
	// Replay window can be disabled; verification can be disabled.
	f.set("", t0.Add(-time.Hour))
	if _, err := f.client(t, func(cfg *Config) { cfg.MaxClockDrift = -1 }).Me(t.Context()); err != nil {
		t.Errorf("drift disabled: %v", err)
	}
	f.set("nosig", t0)
	if _, err := f.client(t, func(cfg *Config) { cfg.PublicKey = "" }).Me(t.Context()); err != nil {
		t.Errorf("verification disabled: %v", err)
	}
	// A wrong account key rejects everything.
	f.set("", t0)
	other := strings.Repeat("ab", 32)
	if _, err := f.client(t, func(cfg *Config) { cfg.PublicKey = other }).Me(t.Context()); !errors.Is(err, ErrNotGenuine) {
		t.Errorf("wrong key: %v", err)
	}
	// Signed garbage is malformed, not offline.
	if _, err := c.ActivateMachine(t.Context(), ActivateParams{LicenseID: "l", Fingerprint: "f"}); !errors.Is(err, ErrMalformedResponse) || IsOffline(err) {
		t.Errorf("garbage: %v", err)
	}
}

func TestNewClientConfig(t *testing.T) {
	if _, err := NewClient(Config{}); err == nil {
		t.Error("no account accepted")
	}
	if _, err := NewClient(Config{Account: "a", BaseURL: "ftp://x"}); err == nil {
		t.Error("ftp base accepted")
	}
	if _, err := NewClient(Config{Account: "a", PublicKey: "zz"}); err == nil {
		t.Error("bad public key accepted")
	}
	c, err := NewClient(Config{Account: "my acct", BaseURL: "https://keygen.example.com/prefix/"})
	if err != nil {
		t.Fatal(err)
	}
	if c.base != "https://keygen.example.com/prefix/v1/accounts/my%20acct" || c.version != DefaultAPIVersion || c.verify {
		t.Errorf("client %+v", c)
	}
	if c.hc.Timeout != 30*time.Second || c.hc.CheckRedirect == nil {
		t.Errorf("default http client %+v", c.hc)
	}
}

func TestParseSignatureHeader(t *testing.T) {
	got := parseSignatureHeader(`keyid="acct", algorithm="ed25519", signature="a+b/c==", headers="(request-target) host date digest"`)
	if got["keyid"] != "acct" || got["algorithm"] != "ed25519" || got["signature"] != "a+b/c==" || got["headers"] != "(request-target) host date digest" {
		t.Errorf("%v", got)
	}
	for _, s := range []string{"", "=", `a="unterminated`, `signature=abc, x`, ",,,"} {
		_ = parseSignatureHeader(s)
	}
}

func TestOtherErrorClasses(t *testing.T) {
	f := newFake(t)
	f.handle("GET /licenses/{id}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("id") {
		case "banned":
			w.Header().Set("X-RateLimit-Window", "blacklist")
			writeErr(w, 403, "", "Access denied", "")
		case "garbage4xx":
			w.WriteHeader(418)
			_, _ = w.Write([]byte("<html>teapot</html>"))
		case "redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "wrongtype":
			writeJSON(w, 200, map[string]any{"data": machineRes("m")})
		case "big":
			w.WriteHeader(200)
			_, _ = w.Write(make([]byte, maxBody+10))
		default:
			writeErr(w, 404, "NOT_FOUND", "Not found", "account not found")
		}
	})
	c := f.client(t)
	ctx := t.Context()
	_, err := c.License(ctx, "banned")
	var rle *RateLimitError
	if !errors.As(err, &rle) || rle.Status != 403 || rle.RetryAfter != 30*time.Minute || !errors.Is(err, ErrRateLimited) {
		t.Errorf("blocklist: %v", err)
	}
	_, err = c.License(ctx, "garbage4xx")
	var e *Error
	if !errors.As(err, &e) || e.Status != 418 || e.Code != "" || e.Title != "I'm a teapot" {
		t.Errorf("garbage 4xx: %#v", err)
	}
	if _, err = c.License(ctx, "redirect"); !errors.Is(err, ErrMalformedResponse) {
		t.Errorf("redirect followed or misclassified: %v", err)
	}
	if _, err = c.License(ctx, "wrongtype"); !errors.Is(err, ErrMalformedResponse) {
		t.Errorf("wrong type: %v", err)
	}
	if _, err = c.License(ctx, "big"); !errors.Is(err, ErrMalformedResponse) {
		t.Errorf("oversized body: %v", err)
	}
	// An unsigned 404 (unknown account) is not trusted, but explained.
	f.set("nosig", t0)
	_, err = c.License(ctx, "nothere")
	if !errors.Is(err, ErrNotGenuine) || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "404") {
		t.Errorf("unsigned 404: %v", err)
	}
}

func TestPagination(t *testing.T) {
	f := newFake(t)
	f.handle("GET /machines/{id}/processes", func(w http.ResponseWriter, r *http.Request) {
		page := r.URL.Query().Get("page[number]")
		doc := map[string]any{"data": []any{processRes("p"+page, page)}, "links": map[string]any{"next": nil}}
		if page != "3" {
			doc["links"] = map[string]any{"next": "/v1/accounts/" + acct + "/machines/x/processes?page[number]=next"}
		}
		writeJSON(w, 200, doc)
	})
	ps, err := f.client(t).MachineProcesses(t.Context(), "x")
	if err != nil || len(ps) != 3 || ps[2].ID != "p3" {
		t.Fatalf("%+v %v", ps, err)
	}
}

func TestConcurrentUse(t *testing.T) {
	f := newFake(t)
	f.handle("POST /processes/{id}/actions/ping", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"data": processRes(r.PathValue("id"), "1")})
	})
	c := f.client(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		cc := c
		if i%2 == 0 {
			cc = c.WithLicenseKey("other")
		}
		wg.Go(func() {
			for j := range 4 {
				id := string(rune('a'+i)) + string(rune('0'+j))
				p, err := cc.PingProcess(t.Context(), id)
				if err == nil && p.ID != id {
					err = errors.New("crossed responses")
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNoSecretsInFormatting(t *testing.T) {
	key := "SECRET-LICENSE-KEY-0123456789"
	cfg := Config{Account: "a", LicenseKey: key, Token: "tok-0123456789-secret"}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("cfg", "config", cfg)
	for _, s := range []string{buf.String(), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		if strings.Contains(s, key) || strings.Contains(s, "tok-0123456789-secret") {
			t.Errorf("secret leaked: %s", s)
		}
	}
}
