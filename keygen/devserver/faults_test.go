package devserver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestRateLimit(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := newTestServer(t, Options{Now: clock, CullInterval: -1, RateLimits: []RateWindow{{Name: "10s", Limit: 3, Period: 10 * time.Second}, {Name: "1m", Limit: 5, Period: time.Minute}}})
	d := demo(t, s, DemoOptions{})
	c := newClient(t, s, licenseAuth(d.License.Key))
	for i := 1; i <= 3; i++ {
		r := c.do("GET", "/me", nil)
		if r.Status != 200 || r.Header.Get("X-RateLimit-Remaining") != strconv.Itoa(3-i) || r.Header.Get("X-RateLimit-Window") != "10s" {
			t.Fatalf("req %d: %d %v", i, r.Status, r.Header)
		}
	}
	r := c.do("GET", "/me", nil)
	if r.Status != 429 || r.code() != "TOO_MANY_REQUESTS" || r.Header.Get("Retry-After") != "10" || r.Header.Get("Keygen-Signature") != "" {
		t.Fatalf("429: %d %v %s", r.Status, r.Header, r.Raw)
	}
	if r.Header.Get("X-RateLimit-Reset") != strconv.FormatInt(now.Add(10*time.Second).Unix(), 10) || r.Header.Get("X-RateLimit-Limit") != "3" {
		t.Errorf("headers: %v", r.Header)
	}
	// Another credential and admin tokens are not affected.
	if r := c.with(bearerAuth(s.AdminToken())).do("GET", "/me", nil); r.Status != 200 {
		t.Errorf("admin: %d", r.Status)
	}
	if r := c.with("").do("POST", "/licenses/actions/validate-key", map[string]any{"meta": map[string]any{"key": d.License.Key}}); r.Status != 200 {
		t.Errorf("anonymous: %d", r.Status)
	}
	mu.Lock()
	now = now.Add(10 * time.Second)
	mu.Unlock()
	if r := c.do("GET", "/me", nil); r.Status != 200 {
		t.Fatalf("next window: %d", r.Status)
	}
	r = c.do("GET", "/me", nil)
	r = c.do("GET", "/me", nil)
	if r.Status != 429 || r.Header.Get("X-RateLimit-Window") != "1m" || r.Header.Get("Retry-After") != "50" {
		t.Fatalf("minute window: %d %v", r.Status, r.Header)
	}
	if st := s.Stats(); st.RateLimited != 3 {
		t.Errorf("stats: %+v", st)
	}
}

func TestFaults(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1})
	d := demo(t, s, DemoOptions{})
	c := newClient(t, s, licenseAuth(d.License.Key))
	get := func() (*http.Response, []byte, error) {
		req, _ := http.NewRequest("GET", c.base+"/me", nil)
		req.Header.Set("Authorization", c.auth)
		res, err := c.hc.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res, b, err
	}

	s.SetFaults(Faults{Refuse: true})
	if _, _, err := get(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("refuse: %v", err)
	}
	s.SetFaults(Faults{ServerErrorRate: 1})
	if res, _, err := get(); err != nil || res.StatusCode < 500 || res.Header.Get("Keygen-Signature") != "" {
		t.Errorf("5xx: %v %v", res, err)
	}
	s.SetFaults(Faults{RateLimitStorm: true})
	if res, _, _ := get(); res.StatusCode != 429 || res.Header.Get("Retry-After") == "" {
		t.Errorf("storm: %v", res)
	}
	s.SetFaults(Faults{BadSignature: true})
	res, body, _ := get()
	if err := verifyEd25519Response(s.PublicKeyHex(), res.Request, res.Header, body); err == nil {
		t.Errorf("bad signature verified")
	}
	s.SetFaults(Faults{NoSignature: true})
	if res, _, _ := get(); res.Header.Get("Keygen-Signature") != "" || res.Header.Get("Digest") == "" {
		t.Errorf("no signature: %v", res.Header)
	}
	s.SetFaults(Faults{TruncateBody: true})
	if _, _, err := get(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncate: %v", err)
	}
	s.SetFaults(Faults{})
	if res, body, err := get(); err != nil || res.StatusCode != 200 || verifyEd25519Response(s.PublicKeyHex(), res.Request, res.Header, body) != nil {
		t.Errorf("healthy: %v %v", res, err)
	}
	if st := s.Stats(); st.Faults != 3 {
		t.Errorf("fault count %d", st.Faults)
	}
}

func TestFaultsOverTCP(t *testing.T) {
	s, err := New(Options{CullInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := demo(t, s, DemoOptions{})
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(ctx context.Context) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL()+"/v1/accounts/"+s.AccountID()+"/me", nil)
		req.Header.Set("Authorization", "License "+d.License.Key)
		res, err := hc.Do(req)
		if err == nil {
			_, err = io.ReadAll(res.Body)
			res.Body.Close()
		}
		return res, err
	}
	s.SetFaults(Faults{Refuse: true})
	if _, err := get(context.Background()); err == nil {
		t.Fatal("refused server answered")
	}
	s.SetFaults(Faults{})
	if res, err := get(context.Background()); err != nil || res.StatusCode != 200 {
		t.Fatalf("after refuse: %v %v", res, err)
	}
	s.SetFaults(Faults{Hang: true})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := get(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: %v", err)
	}
	s.SetFaults(Faults{TruncateBody: true})
	if _, err := get(context.Background()); err == nil {
		t.Fatal("truncated body read fully")
	}
}

func TestHangAndLatencyInBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, Options{})
		d := demo(t, s, DemoOptions{})
		c := newClient(t, s, licenseAuth(d.License.Key))
		s.SetFaults(Faults{Latency: 3 * time.Second})
		start := time.Now()
		if r := c.do("GET", "/me", nil); r.Status != 200 {
			t.Fatal(r.Status)
		}
		if el := time.Since(start); el != 3*time.Second {
			t.Errorf("latency %v", el)
		}
		s.SetFaults(Faults{Hang: true})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", c.base+"/me", nil)
		if _, err := c.hc.Do(req); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("hang: %v", err)
		}
	})
}

func TestAcceptSignature(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1})
	d := demo(t, s, DemoOptions{})
	rsaPub := parsePEM(t, s.RSAPublicKeyPEM()).(*rsa.PublicKey)
	ecPub := parsePEM(t, s.ECDSAPublicKeyPEM()).(*ecdsa.PublicKey)
	for _, alg := range []string{"rsa-pss-sha256", "rsa-sha256", "ecdsa-p256"} {
		c := newClient(t, s, licenseAuth(d.License.Key))
		c.noVerify = true
		c.header = http.Header{"Keygen-Accept-Signature": {`keyid="` + s.AccountID() + `", algorithm="` + alg + `"`}}
		r := c.do("GET", "/me?x=%5B1%5D", nil)
		if r.Status != 200 {
			t.Fatalf("%s: %d %s", alg, r.Status, r.Raw)
		}
		params := map[string]string{}
		for _, m := range sigParamRe.FindAllStringSubmatch(r.Header.Get("Keygen-Signature"), -1) {
			params[m[1]] = m[2]
		}
		if params["algorithm"] != alg || params["keyid"] != s.AccountID() {
			t.Fatalf("%s: header %v", alg, params)
		}
		sig, _ := base64.StdEncoding.DecodeString(params["signature"])
		sum := sha256.Sum256(r.Raw)
		msg := "(request-target): get /v1/accounts/" + s.AccountID() + "/me?x=%5B1%5D\nhost: devserver.invalid\ndate: " + r.Header.Get("Date") +
			"\ndigest: sha-256=" + base64.StdEncoding.EncodeToString(sum[:])
		h := sha256.Sum256([]byte(msg))
		var err error
		switch alg {
		case "rsa-pss-sha256":
			err = rsa.VerifyPSS(rsaPub, crypto.SHA256, h[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		case "rsa-sha256":
			err = rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, h[:], sig)
		case "ecdsa-p256":
			if !ecdsa.VerifyASN1(ecPub, h[:], sig) {
				err = errors.New("ecdsa verify failed")
			}
		}
		if err != nil {
			t.Errorf("%s: %v", alg, err)
		}
	}
	for _, h := range []string{`algorithm=ed25519`, `algorithm="md5"`, `keyid="other", algorithm="ed25519"`} {
		c := newClient(t, s, licenseAuth(d.License.Key))
		c.header = http.Header{"Keygen-Accept-Signature": {h}}
		if r := c.do("GET", "/me", nil); r.Status != 400 || r.get("errors", 0, "source", "header") != "Keygen-Accept-Signature" {
			t.Errorf("%s: %d %s", h, r.Status, r.Raw)
		}
	}
}

func parsePEM(t *testing.T, s string) any {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("no PEM in %q", s)
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSchemeCertificates: RSA and ECDSA schemes sign check-outs with their
// algorithm unless one is asked for; license keys are signed by scheme.
func TestSchemeCertificates(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1})
	rsaPub := parsePEM(t, s.RSAPublicKeyPEM()).(*rsa.PublicKey)
	ecPub := parsePEM(t, s.ECDSAPublicKeyPEM()).(*ecdsa.PublicKey)
	for _, tc := range []struct{ scheme, alg string }{
		{"ECDSA_P256_SIGN", "base64+ecdsa-p256"},
		{"RSA_2048_PKCS1_PSS_SIGN_V2", "base64+rsa-pss-sha256"},
		{"RSA_2048_PKCS1_SIGN_V2", "base64+rsa-sha256"},
	} {
		d := demo(t, s, DemoOptions{Scheme: tc.scheme, Entitlements: []string{}})
		if !strings.HasPrefix(d.License.Key, "key/") {
			t.Errorf("%s key %q", tc.scheme, d.License.Key)
		}
		c := newClient(t, s, licenseAuth(d.License.Key))
		r := c.do("POST", "/licenses/"+d.License.ID+"/actions/check-out", nil)
		if r.str("data", "attributes", "algorithm") != tc.alg {
			t.Fatalf("%s: %s", tc.scheme, r.Raw)
		}
		cert := r.str("data", "attributes", "certificate")
		b64 := strings.NewReplacer("-----BEGIN LICENSE FILE-----", "", "-----END LICENSE FILE-----", "", "\n", "").Replace(cert)
		raw, _ := base64.StdEncoding.DecodeString(b64)
		env := struct{ Enc, Sig, Alg string }{}
		if err := json.Unmarshal(raw, &env); err != nil {
			t.Fatal(err)
		}
		sig, _ := base64.StdEncoding.DecodeString(env.Sig)
		h := sha256.Sum256([]byte("license/" + env.Enc))
		var err error
		switch tc.scheme {
		case "ECDSA_P256_SIGN":
			if !ecdsa.VerifyASN1(ecPub, h[:], sig) {
				err = errors.New("bad ecdsa")
			}
		case "RSA_2048_PKCS1_PSS_SIGN_V2":
			err = rsa.VerifyPSS(rsaPub, crypto.SHA256, h[:], sig, nil)
		default:
			err = rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, h[:], sig)
		}
		if err != nil {
			t.Errorf("%s: %v", tc.scheme, err)
		}
		// Explicit algorithm wins over the scheme.
		r = c.do("POST", "/licenses/"+d.License.ID+"/actions/check-out", map[string]any{"meta": map[string]any{"algorithm": "aes-256-gcm+ed25519"}})
		if r.str("data", "attributes", "algorithm") != "aes-256-gcm+ed25519" {
			t.Errorf("explicit: %s", r.Raw)
		}
	}
}

func TestRouteFaultsAndHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, Options{})
		d := demo(t, s, DemoOptions{})
		c := newClient(t, s, licenseAuth(d.License.Key))
		mid := c.activate(d.License.ID, "fp")
		pid := c.spawn(mid, "1").str("data", "id")
		s.SetFaults(Faults{ServerErrorRate: 1, Routes: []string{"POST /processes/{id}/actions/ping"}})
		if r := c.do("POST", "/processes/"+pid+"/actions/ping", nil); r.Status < 500 {
			t.Fatalf("faulted route: %d", r.Status)
		}
		if r := c.do("GET", "/processes/"+pid, nil); r.Status != 200 {
			t.Fatalf("other route: %d", r.Status)
		}
		s.SetFaults(Faults{})

		release := s.Hold("DELETE /processes/{id}")
		done := make(chan int)
		go func() { done <- c.do("DELETE", "/processes/"+pid, nil).Status }()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("held request completed")
		default:
		}
		if len(s.Processes()) != 1 {
			t.Fatal("held kill ran")
		}
		release()
		if st := <-done; st != 204 {
			t.Fatalf("released kill: %d", st)
		}
	})
}

// Options.Seed replays the injected 5xx faults: two servers with one seed
// answer the same requests with the same statuses (200, 500 or 503);
// another seed draws another sequence.
func TestServerErrorsReplayWithSeed(t *testing.T) {
	statuses := func(seed uint64) []int {
		s := newTestServer(t, Options{Seed: seed, DisableRateLimit: true})
		s.SetFaults(Faults{ServerErrorRate: 0.5})
		hc := &http.Client{Transport: s.Transport()}
		out := make([]int, 0, 64)
		for range 64 {
			res, err := hc.Get("https://api.keygen.sh/v1/ping")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			out = append(out, res.StatusCode)
		}
		return out
	}
	a, b, c := statuses(42), statuses(42), statuses(43)
	if !slices.Equal(a, b) {
		t.Errorf("seed 42 twice:\n%v\n%v", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("seeds 42 and 43 drew the same statuses: %v", a)
	}
	seen := map[int]bool{}
	for _, st := range a {
		seen[st] = true
	}
	if !seen[200] || !seen[500] || !seen[503] {
		t.Errorf("statuses drawn: %v, want 200, 500 and 503 among them", a)
	}
}
