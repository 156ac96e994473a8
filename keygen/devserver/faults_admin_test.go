package devserver

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// The fault specs of the --fault flags and the admin route.
func TestParseFault(t *testing.T) {
	for _, tc := range []struct {
		specs []string
		want  Faults
		err   bool
	}{
		{[]string{"latency=25ms"}, Faults{Latency: 25 * time.Millisecond}, false},
		{[]string{"refuse", "hang=false"}, Faults{Refuse: true}, false},
		{[]string{"5xx=0.3", "429"}, Faults{ServerErrorRate: 0.3, RateLimitStorm: true}, false},
		{[]string{"bad-signature", "no-signature", "truncate"}, Faults{BadSignature: true, NoSignature: true, TruncateBody: true}, false},
		{[]string{"date-skew=-10m"}, Faults{DateSkew: -10 * time.Minute}, false},
		{[]string{"route=post /processes", "route=GET /me", "hang"}, Faults{Hang: true, Routes: []string{"POST /processes", "GET /me"}}, false},
		{[]string{"latency=-1s"}, Faults{}, true},
		{[]string{"latency=soon"}, Faults{}, true},
		{[]string{"5xx=2"}, Faults{}, true},
		{[]string{"route=/me"}, Faults{}, true},
		{[]string{"explode"}, Faults{}, true},
		{[]string{"refuse=maybe"}, Faults{}, true},
	} {
		got, err := ParseFaults(tc.specs)
		if (err != nil) != tc.err {
			t.Errorf("%v: err %v", tc.specs, err)
			continue
		}
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(tc.want)
		if !tc.err && !bytes.Equal(gb, wb) {
			t.Errorf("%v: %s, want %s", tc.specs, gb, wb)
		}
	}
}

func faultsCall(t *testing.T, hc *http.Client, url, method, auth string, body any) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	var doc map[string]any
	_ = json.NewDecoder(res.Body).Decode(&doc)
	return res.StatusCode, doc
}

// The admin fault route (admin token only) sets, shows and clears faults,
// and is served even while the faults it set are active: a refusing
// server (over a real socket) can be healed over HTTP.
func TestFaultsAdminRoute(t *testing.T) {
	s, err := New(Options{CullInterval: -1, DisableRateLimit: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := demo(t, s, DemoOptions{})
	hc := &http.Client{Timeout: 10 * time.Second}
	faults := s.URL() + "/v1/accounts/" + s.AccountID() + FaultsPath
	if st, _ := faultsCall(t, hc, faults, "PUT", "", map[string]any{"faults": []string{"hang"}}); st != 401 {
		t.Fatalf("no token: %d", st)
	}
	if st, _ := faultsCall(t, hc, faults, "PUT", s.CreateToken("license", d.License.ID), map[string]any{"faults": []string{"hang"}}); st != 401 {
		t.Fatalf("license token: %d", st)
	}
	if st, _ := faultsCall(t, hc, faults, "PUT", s.AdminToken(), map[string]any{"faults": []string{"explode"}}); st != 400 {
		t.Fatalf("bad spec: %d", st)
	}
	st, doc := faultsCall(t, hc, faults, "PUT", s.AdminToken(), map[string]any{"faults": []string{"refuse"}})
	if st != 200 || s.currentFaults().Refuse != true {
		t.Fatalf("set refuse: %d %v", st, doc)
	}
	me := s.URL() + "/v1/accounts/" + s.AccountID() + "/me"
	req, _ := http.NewRequest("GET", me, nil)
	req.Header.Set("Authorization", "License "+d.License.Key)
	if res, err := hc.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("refuse fault answered %d", res.StatusCode)
	}
	if st, doc := faultsCall(t, hc, faults, "GET", s.AdminToken(), nil); st != 200 || len(doc["faults"].([]any)) != 1 {
		t.Fatalf("show: %d %v", st, doc)
	}
	if st, _ := faultsCall(t, hc, faults, "DELETE", s.AdminToken(), nil); st != 200 {
		t.Fatalf("clear: %d", st)
	}
	req, _ = http.NewRequest("GET", me, nil)
	req.Header.Set("Authorization", "License "+d.License.Key)
	res, err := hc.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("after clear: %v", err)
	}
	res.Body.Close()
}

// The Date skew fault shifts the Date header and still signs it, so a
// client's clock-skew check (not its signature check) is what fails.
func TestDateSkewFault(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := newTestServer(t, Options{CullInterval: -1, DisableRateLimit: true, Now: func() time.Time { return now }})
	d := demo(t, s, DemoOptions{})
	s.SetFaults(Faults{DateSkew: -10 * time.Minute})
	r := newClient(t, s, licenseAuth(d.License.Key)).do("GET", "/me", nil) // the client verifies the signature
	if r.Status != 200 || r.Header.Get("Date") != now.Add(-10*time.Minute).Format(http.TimeFormat) {
		t.Fatalf("%d Date %q", r.Status, r.Header.Get("Date"))
	}
}
