package keygen_test

// End-to-end tests of the typed client against the in-memory devserver:
// every Client method, success and failure paths, with response signature
// verification on. Most tests use devserver.Transport (no socket); one runs
// over a real loopback listener. Time-dependent pieces run in synctest
// bubbles, where the devserver clock and the client clock are both fake.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// newDevserver starts an in-memory devserver (no listener) closed at the
// end of the test. Inside a synctest bubble, call it from the bubble.
func newDevserver(t testing.TB, o devserver.Options) *devserver.Server {
	t.Helper()
	o.NoListen = true
	srv, err := devserver.New(o)
	if err != nil {
		t.Fatalf("devserver.New: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// devClient is a verifying client for srv (Transport, or the real listener
// when srv listens); mods adjust the config (credentials, hooks).
func devClient(t testing.TB, srv *devserver.Server, mods ...func(*keygen.Config)) *keygen.Client {
	t.Helper()
	cfg := keygen.Config{
		BaseURL:      srv.URL(),
		Account:      srv.AccountID(),
		PublicKey:    srv.PublicKeyHex(),
		AgentVersion: "test",
		HTTPClient:   &http.Client{Transport: srv.Transport()},
	}
	if !strings.HasSuffix(srv.URL(), "devserver.invalid") {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := keygen.NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func withKey(key string) func(*keygen.Config) { return func(c *keygen.Config) { c.LicenseKey = key } }
func withToken(tok string) func(*keygen.Config) {
	return func(c *keygen.Config) { c.Token = tok }
}

// apiErr asserts err is an *keygen.Error with the given status and code.
func apiErr(t testing.TB, err error, status int, code string) *keygen.Error {
	t.Helper()
	var e *keygen.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want *keygen.Error %d %s", err, err, status, code)
	}
	if e.Status != status || e.Code != code {
		t.Fatalf("err = %v, want %d %s", err, status, code)
	}
	if e.RequestID == "" {
		t.Errorf("err %v: no request id", err)
	}
	return e
}

func wantIs(t testing.TB, err error, targets ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %v", targets)
	}
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("err = %v (%T): errors.Is(%v) = false", err, err, target)
		}
	}
}

func codes(es []keygen.Entitlement) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.Code)
	}
	sort.Strings(out)
	return out
}

func componentFPs(cs []keygen.Component) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Fingerprint)
	}
	sort.Strings(out)
	return out
}

func comps(fps ...string) []keygen.ComponentParams {
	out := make([]keygen.ComponentParams, len(fps))
	for i, fp := range fps {
		out[i] = keygen.ComponentParams{Fingerprint: fp, Name: "component " + fp, Metadata: map[string]any{"i": i}}
	}
	return out
}

// TestDevserverValidate covers ValidateKey and Validate verdicts.
func TestDevserverValidate(t *testing.T) {
	ctx := context.Background()
	srv := newDevserver(t, devserver.Options{DisableRateLimit: true, CullInterval: -1})
	// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
	demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions, MaxMachines: new(3)})
	if err != nil {
		t.Fatal(err)
	}
	srv.CreateEntitlement("NOT_ATTACHED", "Not attached")
	admin := devClient(t, srv, withToken(srv.AdminToken()))
	anon := devClient(t, srv)

	nodeLocked := srv.CreatePolicy(devserver.PolicySpec{Name: "node-locked", Strict: true, AuthenticationStrategy: "MIXED"})
	fresh := srv.CreateLicense(devserver.LicenseSpec{PolicyID: nodeLocked.ID, Permissions: devserver.LicensePermissions, Name: "fresh"})

	allComps := srv.CreatePolicy(devserver.PolicySpec{Name: "match-all", Floating: true, MaxMachines: new(5),
		ComponentMatchingStrategy: "MATCH_ALL", AuthenticationStrategy: "MIXED"})
	withComps := srv.CreateLicense(devserver.LicenseSpec{PolicyID: allComps.ID, Permissions: devserver.LicensePermissions})
	if _, err := admin.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: withComps.ID, Fingerprint: "fp-comp", Components: comps("c1", "c2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: demo.License.ID, Fingerprint: "fp-demo"}); err != nil {
		t.Fatal(err)
	}

	loose := srv.CreatePolicy(devserver.PolicySpec{Name: "loose", Floating: true})
	suspended := srv.CreateLicense(devserver.LicenseSpec{PolicyID: loose.ID, Permissions: devserver.LicensePermissions, Suspended: true})
	past := time.Now().Add(-time.Hour)
	expired := srv.CreateLicense(devserver.LicenseSpec{PolicyID: loose.ID, Permissions: devserver.LicensePermissions, Expiry: &past})

	tests := []struct {
		name      string
		key, id   string // key: ValidateKey (anonymous); id: Validate (admin token)
		opts      keygen.ValidateOptions
		valid     bool
		code      string
		noLicense bool
	}{
		{name: "valid", key: demo.License.Key, valid: true, code: "VALID"},
		{name: "valid by id", id: demo.License.ID, valid: true, code: "VALID"},
		{name: "valid fingerprint", key: demo.License.Key, opts: keygen.ValidateOptions{Fingerprint: "fp-demo", Entitlements: []string{"DEMO_BASIC"}}, valid: true, code: "VALID"},
		{name: "product and policy scope", id: demo.License.ID, opts: keygen.ValidateOptions{Product: demo.Product.ID, Policy: demo.Policy.ID}, valid: true, code: "VALID"},
		{name: "policy scope mismatch", id: demo.License.ID, opts: keygen.ValidateOptions{Policy: loose.ID}, code: "POLICY_SCOPE_MISMATCH"},
		{name: "no machine before activation", key: fresh.Key, opts: keygen.ValidateOptions{Fingerprint: "fp-x"}, code: "NO_MACHINE"},
		{name: "strict node-locked without machine", id: fresh.ID, code: "NO_MACHINE"},
		{name: "fingerprint scope mismatch", key: demo.License.Key, opts: keygen.ValidateOptions{Fingerprint: "fp-other"}, code: "FINGERPRINT_SCOPE_MISMATCH"},
		{name: "components match all", key: withComps.Key, opts: keygen.ValidateOptions{Fingerprint: "fp-comp", Components: []string{"c1", "c2"}}, valid: true, code: "VALID"},
		{name: "components scope mismatch", key: withComps.Key, opts: keygen.ValidateOptions{Fingerprint: "fp-comp", Components: []string{"c1", "c-other"}}, code: "COMPONENTS_SCOPE_MISMATCH"},
		{name: "suspended", key: suspended.Key, code: "SUSPENDED"},
		{name: "suspended by id", id: suspended.ID, code: "SUSPENDED"},
		{name: "expired", key: expired.Key, code: "EXPIRED"},
		{name: "entitlements missing", key: demo.License.Key, opts: keygen.ValidateOptions{Entitlements: []string{"DEMO_PRO", "NOT_ATTACHED"}}, code: "ENTITLEMENTS_MISSING"},
		{name: "unknown key", key: "NO-SUCH-KEY", code: "NOT_FOUND", noLicense: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v *keygen.Validation
			var err error
			wantID := tc.id
			if tc.key != "" {
				v, err = anon.ValidateKey(ctx, tc.key, tc.opts)
			} else {
				v, err = admin.Validate(ctx, tc.id, tc.opts)
			}
			if err != nil {
				t.Fatalf("validate: %v", err)
			}
			if v.Valid != tc.valid || v.Code != tc.code {
				t.Fatalf("validation = %v %s (%s), want %v %s", v.Valid, v.Code, v.Detail, tc.valid, tc.code)
			}
			if v.Nonce == 0 || v.Timestamp.IsZero() || v.Detail == "" {
				t.Errorf("validation meta: nonce %d, ts %v, detail %q", v.Nonce, v.Timestamp, v.Detail)
			}
			switch {
			case tc.noLicense:
				if v.License != nil {
					t.Errorf("license = %+v, want nil", v.License)
				}
			case v.License == nil:
				t.Fatal("no license in validation")
			case tc.key != "" && v.License.Key != tc.key:
				t.Errorf("license key = %q, want %q", v.License.Key, tc.key)
			case wantID != "" && v.License.ID != wantID:
				t.Errorf("license id = %q, want %q", v.License.ID, wantID)
			}
		})
	}

	t.Run("license key client does not send its key to validate-key", func(t *testing.T) {
		// A stale configured key must not turn validate-key into a 401.
		c := devClient(t, srv, withKey("STALE-KEY"))
		v, err := c.ValidateKey(ctx, demo.License.Key, keygen.ValidateOptions{})
		if err != nil || !v.Valid {
			t.Fatalf("ValidateKey = %+v, %v", v, err)
		}
	})
	t.Run("nonces differ", func(t *testing.T) {
		a, err := anon.ValidateKey(ctx, demo.License.Key, keygen.ValidateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := anon.ValidateKey(ctx, demo.License.Key, keygen.ValidateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if a.Nonce == b.Nonce {
			t.Errorf("same nonce %d twice", a.Nonce)
		}
	})
}

// TestDevserverLifecycle walks a license through every license, machine,
// component and process endpoint with license-key authentication.
func TestDevserverLifecycle(t *testing.T) {
	ctx := context.Background()
	srv := newDevserver(t, devserver.Options{DisableRateLimit: true, CullInterval: -1})
	// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
	demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions, MaxMachines: new(2), MaxProcesses: new(2)})
	if err != nil {
		t.Fatal(err)
	}
	lic := demo.License
	c := devClient(t, srv, withKey(lic.Key))

	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	t.Run("Me", func(t *testing.T) {
		l, err := c.Me(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l.ID != lic.ID || l.Key != lic.Key || l.PolicyID != demo.Policy.ID || l.ProductID != demo.Product.ID {
			t.Errorf("Me = %+v", l)
		}
	})
	t.Run("License", func(t *testing.T) {
		for _, idOrKey := range []string{lic.ID, lic.Key} {
			l, err := c.License(ctx, idOrKey)
			if err != nil {
				t.Fatalf("License(%s): %v", idOrKey, err)
			}
			if l.ID != lic.ID || l.Name != "Demo License" || l.Status == "" || l.Suspended {
				t.Errorf("License(%s) = %+v", idOrKey, l)
			}
			if l.MaxMachines == nil || *l.MaxMachines != 2 || l.MaxProcesses == nil || *l.MaxProcesses != 2 {
				t.Errorf("License limits = %v %v", l.MaxMachines, l.MaxProcesses)
			}
		}
		_, err := c.License(ctx, "00000000-0000-4000-8000-000000000000")
		wantIs(t, err, keygen.ErrNotFound)
		apiErr(t, err, 404, "NOT_FOUND")
	})
	t.Run("LicenseEntitlements", func(t *testing.T) {
		es, err := c.LicenseEntitlements(ctx, lic.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got := codes(es); !slices.Equal(got, []string{"DEMO_BASIC", "DEMO_PRO"}) {
			t.Errorf("entitlements = %v", got)
		}
		for _, e := range es {
			if e.ID == "" || e.Name == "" {
				t.Errorf("entitlement %+v", e)
			}
		}
	})
	t.Run("LicensePolicy", func(t *testing.T) {
		p, err := c.LicensePolicy(ctx, lic.ID)
		if err != nil {
			t.Fatal(err)
		}
		if p.ID != demo.Policy.ID || p.Scheme != "ED25519_SIGN" || p.AuthenticationStrategy != "LICENSE" ||
			!p.Floating || p.ProcessLeasingStrategy != "PER_MACHINE" || p.MaxProcesses == nil || *p.MaxProcesses != 2 {
			t.Errorf("policy = %+v", p)
		}
	})

	var m1 *keygen.Machine
	t.Run("ActivateMachine", func(t *testing.T) {
		m1, err = c.ActivateMachine(ctx, keygen.ActivateParams{
			LicenseID: lic.ID, Fingerprint: "fp-1", Name: "box one", Hostname: "box1", Platform: "linux/amd64",
			Cores: 8, Memory: 1 << 30, Metadata: map[string]any{"team": "qa"}, Components: comps("cpu", "disk"),
		})
		if err != nil {
			t.Fatal(err)
		}
		if m1.ID == "" || m1.Fingerprint != "fp-1" || m1.Name != "box one" || m1.Hostname != "box1" || m1.Platform != "linux/amd64" ||
			m1.Cores != 8 || m1.LicenseID != lic.ID || m1.Metadata["team"] != "qa" || m1.HeartbeatStatus != "NOT_STARTED" {
			t.Errorf("machine = %+v", m1)
		}
	})
	if m1 == nil {
		t.FailNow()
	}
	activations := func() int { return srv.Stats().Routes["POST /machines"] }

	t.Run("ActivateMachine errors", func(t *testing.T) {
		tests := []struct {
			name   string
			p      keygen.ActivateParams
			is     error
			status int
			code   string
		}{
			{name: "fingerprint taken", p: keygen.ActivateParams{LicenseID: lic.ID, Fingerprint: "fp-1"},
				is: keygen.ErrFingerprintTaken, status: 422, code: "FINGERPRINT_TAKEN"},
			{name: "duplicate components", p: keygen.ActivateParams{LicenseID: lic.ID, Fingerprint: "fp-dup", Components: comps("x", "x")},
				is: keygen.ErrComponentsTaken, status: 422, code: "COMPONENTS_FINGERPRINT_CONFLICT"},
			{name: "unknown license", p: keygen.ActivateParams{LicenseID: "00000000-0000-4000-8000-000000000000", Fingerprint: "fp-u"},
				status: 422, code: "LICENSE_NOT_FOUND"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				m, err := c.ActivateMachine(ctx, tc.p)
				if m != nil {
					t.Errorf("machine = %+v", m)
				}
				if tc.is != nil {
					wantIs(t, err, tc.is)
				}
				apiErr(t, err, tc.status, tc.code)
			})
		}
		t.Run("more than 20 components is rejected before sending", func(t *testing.T) {
			before := activations()
			fps := make([]string, keygen.MaxInlineComponents+1)
			for i := range fps {
				fps[i] = fmt.Sprintf("c%02d", i)
			}
			m, err := c.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: lic.ID, Fingerprint: "fp-many", Components: comps(fps...)})
			if err == nil || m != nil || !strings.Contains(err.Error(), "components") {
				t.Fatalf("ActivateMachine(21 components) = %v, %v", m, err)
			}
			var ke *keygen.Error
			if errors.As(err, &ke) || keygen.IsOffline(err) {
				t.Errorf("err %v should be a local argument error", err)
			}
			if got := activations(); got != before {
				t.Errorf("request sent anyway (%d -> %d)", before, got)
			}
		})
		t.Run("missing fingerprint", func(t *testing.T) {
			if _, err := c.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: lic.ID}); err == nil {
				t.Fatal("no error")
			}
		})
	})

	var m2 *keygen.Machine
	t.Run("machine limit", func(t *testing.T) {
		m2, err = c.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: lic.ID, Fingerprint: "fp-2"})
		if err != nil {
			t.Fatal(err)
		}
		_, err := c.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: lic.ID, Fingerprint: "fp-3"})
		wantIs(t, err, keygen.ErrMachineLimitExceeded)
		apiErr(t, err, 422, "MACHINE_LIMIT_EXCEEDED")
	})

	t.Run("Machine", func(t *testing.T) {
		for _, idOrFP := range []string{m1.ID, "fp-1"} {
			m, err := c.Machine(ctx, idOrFP)
			if err != nil {
				t.Fatalf("Machine(%s): %v", idOrFP, err)
			}
			if m.ID != m1.ID || m.Fingerprint != "fp-1" || m.LicenseID != lic.ID {
				t.Errorf("Machine(%s) = %+v", idOrFP, m)
			}
		}
		_, err := c.Machine(ctx, "fp-none")
		wantIs(t, err, keygen.ErrNotFound)
	})
	t.Run("LicenseMachines", func(t *testing.T) {
		ms, err := c.LicenseMachines(ctx, lic.ID)
		if err != nil {
			t.Fatal(err)
		}
		var fps []string
		for _, m := range ms {
			fps = append(fps, m.Fingerprint)
		}
		sort.Strings(fps)
		if !slices.Equal(fps, []string{"fp-1", "fp-2"}) {
			t.Errorf("machines = %v", fps)
		}
	})

	t.Run("components", func(t *testing.T) {
		cs, err := c.MachineComponents(ctx, m1.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got := componentFPs(cs); !slices.Equal(got, []string{"cpu", "disk"}) {
			t.Errorf("components = %v", got)
		}
		for _, cp := range cs {
			if cp.ID == "" || cp.MachineID != m1.ID || !strings.HasPrefix(cp.Name, "component ") {
				t.Errorf("component %+v", cp)
			}
		}
		cp, err := c.AddComponent(ctx, m1.ID, keygen.ComponentParams{Fingerprint: "gpu", Name: "GPU", Metadata: map[string]any{"vram": 8.0}})
		if err != nil {
			t.Fatal(err)
		}
		if cp.ID == "" || cp.Fingerprint != "gpu" || cp.Name != "GPU" || cp.MachineID != m1.ID || cp.Metadata["vram"] != 8.0 {
			t.Errorf("AddComponent = %+v", cp)
		}
		cs, err = c.MachineComponents(ctx, m1.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got := componentFPs(cs); !slices.Equal(got, []string{"cpu", "disk", "gpu"}) {
			t.Errorf("components after add = %v", got)
		}
		// POST /components answers a duplicate with the attribute-level
		// FINGERPRINT_TAKEN (Keygen does the same), not COMPONENTS_*.
		_, err = c.AddComponent(ctx, m1.ID, keygen.ComponentParams{Fingerprint: "gpu", Name: "GPU again"})
		wantIs(t, err, keygen.ErrFingerprintTaken)
		apiErr(t, err, 422, "FINGERPRINT_TAKEN")
		_, err = c.AddComponent(ctx, "00000000-0000-4000-8000-000000000000", keygen.ComponentParams{Fingerprint: "z", Name: "z"})
		apiErr(t, err, 422, "MACHINE_NOT_FOUND")
	})

	t.Run("PingMachine", func(t *testing.T) {
		m, err := c.PingMachine(ctx, m1.ID)
		if err != nil {
			t.Fatal(err)
		}
		if m.HeartbeatStatus != "ALIVE" || m.LastHeartbeat == nil || m.NextHeartbeat == nil ||
			m.NextHeartbeat.Sub(*m.LastHeartbeat) != 600*time.Second {
			t.Errorf("PingMachine = %+v", m)
		}
		_, err = c.PingMachine(ctx, "fp-none")
		wantIs(t, err, keygen.ErrNotFound)
	})

	t.Run("processes", func(t *testing.T) {
		p1, err := c.SpawnProcess(ctx, m1.ID, "pid-1", map[string]any{"argv0": "app"})
		if err != nil {
			t.Fatal(err)
		}
		if p1.ID == "" || p1.PID != "pid-1" || p1.MachineID != m1.ID || p1.Status != "ALIVE" || p1.Metadata["argv0"] != "app" {
			t.Errorf("SpawnProcess = %+v", p1)
		}
		_, err = c.SpawnProcess(ctx, m1.ID, "pid-1", nil)
		wantIs(t, err, keygen.ErrPIDTaken)
		apiErr(t, err, 422, "PID_TAKEN")
		p2, err := c.SpawnProcess(ctx, m1.ID, "pid-2", nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.SpawnProcess(ctx, m1.ID, "pid-3", nil)
		wantIs(t, err, keygen.ErrProcessLimitExceeded)
		apiErr(t, err, 422, "MACHINE_PROCESS_LIMIT_EXCEEDED")
		// The limit is per machine: the other machine still has room.
		if _, err := c.SpawnProcess(ctx, m2.ID, "pid-1", nil); err != nil {
			t.Fatalf("spawn on second machine: %v", err)
		}

		p, err := c.Process(ctx, p1.ID)
		if err != nil || p.ID != p1.ID || p.PID != "pid-1" {
			t.Fatalf("Process = %+v, %v", p, err)
		}
		ps, err := c.MachineProcesses(ctx, m1.ID)
		if err != nil {
			t.Fatal(err)
		}
		var pids []string
		for _, p := range ps {
			pids = append(pids, p.PID)
		}
		sort.Strings(pids)
		if !slices.Equal(pids, []string{"pid-1", "pid-2"}) {
			t.Errorf("MachineProcesses = %v", pids)
		}
		p, err = c.PingProcess(ctx, p2.ID)
		if err != nil || p.Status != "ALIVE" || p.Interval != 600 || p.LastHeartbeat == nil {
			t.Fatalf("PingProcess = %+v, %v", p, err)
		}
		if err := c.KillProcess(ctx, p2.ID); err != nil {
			t.Fatalf("KillProcess: %v", err)
		}
		for name, call := range map[string]func() error{
			"Process":     func() error { _, err := c.Process(ctx, p2.ID); return err },
			"PingProcess": func() error { _, err := c.PingProcess(ctx, p2.ID); return err },
			"KillProcess": func() error { return c.KillProcess(ctx, p2.ID) },
		} {
			err := call()
			wantIs(t, err, keygen.ErrNotFound)
			apiErr(t, err, 404, "NOT_FOUND")
			_ = name
		}
		// A killed process frees its slot.
		if _, err := c.SpawnProcess(ctx, m1.ID, "pid-3", nil); err != nil {
			t.Fatalf("spawn after kill: %v", err)
		}
	})

	t.Run("checkout", func(t *testing.T) {
		testCheckouts(t, c, srv, lic.Key, m1.ID, "fp-1", lic.ID)
	})

	t.Run("DeactivateMachine", func(t *testing.T) {
		if err := c.DeactivateMachine(ctx, m2.ID); err != nil {
			t.Fatal(err)
		}
		_, err := c.Machine(ctx, m2.ID)
		wantIs(t, err, keygen.ErrNotFound)
		err = c.DeactivateMachine(ctx, m2.ID)
		wantIs(t, err, keygen.ErrNotFound)
		apiErr(t, err, 404, "NOT_FOUND")
		// By fingerprint, and the seat is free again.
		if err := c.DeactivateMachine(ctx, "fp-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: lic.ID, Fingerprint: "fp-3"}); err != nil {
			t.Fatalf("activate after deactivate: %v", err)
		}
		ms, err := c.LicenseMachines(ctx, lic.ID)
		if err != nil || len(ms) != 1 || ms[0].Fingerprint != "fp-3" {
			t.Fatalf("LicenseMachines = %+v, %v", ms, err)
		}
	})
}

// testCheckouts checks out machine and license files in every supported
// shape and opens each with keygen.OpenCertificate.
func testCheckouts(t *testing.T, c *keygen.Client, srv *devserver.Server, key, machineID, fp, licenseID string) {
	ctx := context.Background()
	keys := c.PublicKeys()
	month := devserver.DefaultCheckoutTTL
	tests := []struct {
		name      string
		machine   bool
		o         keygen.CheckoutOptions
		alg       string
		ttl       *int // nil: no expiry
		ents      bool // entitlements included
		comps     bool // components included
		withLicen bool // machine file includes its license
	}{
		{name: "license default", o: keygen.CheckoutOptions{}, alg: "base64+ed25519", ttl: &month},
		{name: "license encrypted ttl", o: keygen.CheckoutOptions{Encrypt: true, TTL: 2 * time.Hour, Include: []string{"entitlements"}}, alg: "aes-256-gcm+ed25519", ttl: new(7200), ents: true},
		{name: "license no expiry", o: keygen.CheckoutOptions{NoExpiry: true, Algorithm: "base64+ed25519"}, alg: "base64+ed25519"},
		{name: "license aes algorithm", o: keygen.CheckoutOptions{Algorithm: "aes-256-gcm+ed25519", TTL: time.Hour}, alg: "aes-256-gcm+ed25519", ttl: new(3600)},
		{name: "machine default", machine: true, alg: "base64+ed25519", ttl: &month},
		{name: "machine encrypted includes", machine: true, o: keygen.CheckoutOptions{Algorithm: "aes-256-gcm+ed25519", TTL: 24 * time.Hour,
			Include: []string{"license", "license.entitlements", "components"}}, alg: "aes-256-gcm+ed25519", ttl: new(86400), ents: true, comps: true, withLicen: true},
		{name: "machine no expiry", machine: true, o: keygen.CheckoutOptions{NoExpiry: true, Encrypt: true}, alg: "aes-256-gcm+ed25519"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var co *keygen.Checkout
			var err error
			if tc.machine {
				co, err = c.CheckoutMachine(ctx, machineID, tc.o)
			} else {
				co, err = c.CheckoutLicense(ctx, licenseID, tc.o)
			}
			if err != nil {
				t.Fatal(err)
			}
			if co.Algorithm != tc.alg || co.Issued.IsZero() || len(co.Certificate) == 0 {
				t.Fatalf("checkout = alg %q issued %v", co.Algorithm, co.Issued)
			}
			if (co.TTL == nil) != (tc.ttl == nil) || (co.TTL != nil && *co.TTL != *tc.ttl) || (co.Expiry == nil) != (tc.ttl == nil) {
				t.Fatalf("checkout ttl %v expiry %v, want ttl %v", co.TTL, co.Expiry, tc.ttl)
			}
			o := keygen.OpenOptions{Keys: keys, LicenseKey: key}
			if tc.machine {
				o.Fingerprint = fp
			}
			ds, err := keygen.OpenCertificate(co.Certificate, o)
			if err != nil {
				t.Fatalf("OpenCertificate: %v", err)
			}
			checkDatasetAgainst(t, ds, co, tc.alg, tc.machine, licenseID, machineID, fp)
			if got := len(ds.Entitlements) > 0; got != tc.ents {
				t.Errorf("entitlements included = %v (%v), want %v", got, codes(ds.Entitlements), tc.ents)
			}
			if tc.ents && !slices.Equal(codes(ds.Entitlements), []string{"DEMO_BASIC", "DEMO_PRO"}) {
				t.Errorf("entitlements = %v", codes(ds.Entitlements))
			}
			if got := len(ds.Components) > 0; got != tc.comps {
				t.Errorf("components included = %v, want %v", got, tc.comps)
			}
			if tc.comps && !slices.Equal(componentFPs(ds.Components), []string{"cpu", "disk", "gpu"}) {
				t.Errorf("components = %v", componentFPs(ds.Components))
			}
			if tc.machine && tc.withLicen != (ds.License != nil) {
				t.Errorf("machine file license = %+v, want included %v", ds.License, tc.withLicen)
			}
			if tc.machine && ds.License != nil && ds.License.ID != licenseID {
				t.Errorf("machine file license id = %q", ds.License.ID)
			}
			if ds.Encrypted {
				// Wrong secret: decryption fails rather than yielding data.
				bad := o
				bad.Fingerprint += "x"
				bad.LicenseKey += "x"
				if _, err := keygen.OpenCertificate(co.Certificate, bad); !errors.Is(err, keygen.ErrCertDecrypt) {
					t.Errorf("open with wrong secret: %v", err)
				}
			}
		})
	}

	t.Run("bad ttl", func(t *testing.T) {
		for _, ttl := range []time.Duration{time.Minute, 3599 * time.Second} {
			_, err := c.CheckoutLicense(ctx, licenseID, keygen.CheckoutOptions{TTL: ttl})
			e := apiErr(t, err, 400, "CHECKOUT_TTL_INVALID")
			if e.Source.Parameter != "ttl" {
				t.Errorf("source = %+v", e.Source)
			}
			_, err = c.CheckoutMachine(ctx, machineID, keygen.CheckoutOptions{TTL: ttl})
			apiErr(t, err, 400, "CHECKOUT_TTL_INVALID")
		}
	})
	t.Run("bad algorithm and include", func(t *testing.T) {
		_, err := c.CheckoutLicense(ctx, licenseID, keygen.CheckoutOptions{Algorithm: "rot13+ed25519"})
		apiErr(t, err, 400, "CHECKOUT_ALGORITHM_INVALID")
		_, err = c.CheckoutMachine(ctx, machineID, keygen.CheckoutOptions{Include: []string{"secrets"}})
		apiErr(t, err, 400, "CHECKOUT_INCLUDE_INVALID")
	})
	t.Run("unknown machine", func(t *testing.T) {
		_, err := c.CheckoutMachine(ctx, "fp-none", keygen.CheckoutOptions{})
		wantIs(t, err, keygen.ErrNotFound)
	})
}

func checkDatasetAgainst(t *testing.T, ds *keygen.Dataset, co *keygen.Checkout, alg string, machine bool, licenseID, machineID, fp string) {
	t.Helper()
	if ds.Algorithm != alg || ds.Encrypted != strings.HasPrefix(alg, "aes-256-gcm+") {
		t.Errorf("dataset alg %q encrypted %v", ds.Algorithm, ds.Encrypted)
	}
	if !ds.Issued.Equal(co.Issued) {
		t.Errorf("issued %v, checkout said %v", ds.Issued, co.Issued)
	}
	switch {
	case (ds.Expiry == nil) != (co.Expiry == nil):
		t.Errorf("expiry %v, checkout said %v", ds.Expiry, co.Expiry)
	case ds.Expiry != nil && !ds.Expiry.Equal(*co.Expiry):
		t.Errorf("expiry %v, checkout said %v", ds.Expiry, *co.Expiry)
	case ds.Expiry != nil && !ds.Expiry.After(time.Now()):
		t.Errorf("expiry %v in the past", ds.Expiry)
	}
	if (ds.TTL == nil) != (co.TTL == nil) || (ds.TTL != nil && *ds.TTL != *co.TTL) {
		t.Errorf("ttl %v, checkout said %v", ds.TTL, co.TTL)
	}
	if machine {
		if ds.Kind != keygen.KindMachine || ds.Machine == nil || ds.Machine.ID != machineID || ds.Machine.Fingerprint != fp || ds.Machine.LicenseID != licenseID {
			t.Fatalf("machine dataset kind %q machine %+v", ds.Kind, ds.Machine)
		}
		return
	}
	if ds.Kind != keygen.KindLicense || ds.License == nil || ds.License.ID != licenseID || ds.Machine != nil {
		t.Fatalf("license dataset kind %q license %+v", ds.Kind, ds.License)
	}
}

// TestDevserverCheckoutSchemes checks out RSA- and ECDSA-signed files. The
// RSA key is generated once, here.
func TestDevserverCheckoutSchemes(t *testing.T) {
	ctx := context.Background()
	srv := newDevserver(t, devserver.Options{DisableRateLimit: true, CullInterval: -1})
	keys, err := keygen.ParsePublicKeys(srv.PublicKeyHex(), srv.RSAPublicKeyPEM(), srv.ECDSAPublicKeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	if keys.Ed25519 == nil || keys.RSA == nil || keys.ECDSA == nil {
		t.Fatalf("keys = %+v", keys)
	}
	admin := devClient(t, srv, withToken(srv.AdminToken()))
	edOnly := admin // no RSA/ECDSA keys configured
	full := devClient(t, srv, withToken(srv.AdminToken()), func(c *keygen.Config) {
		c.RSAPublicKey, c.ECDSAPublicKey = srv.RSAPublicKeyPEM(), srv.ECDSAPublicKeyPEM()
	})
	if k := full.PublicKeys(); k.RSA == nil || k.ECDSA == nil || !k.RSA.Equal(keys.RSA) || !k.ECDSA.Equal(keys.ECDSA) {
		t.Fatal("client did not parse the RSA/ECDSA keys")
	}

	tests := []struct {
		scheme  string
		o       keygen.CheckoutOptions
		wantAlg string
	}{
		{"RSA_2048_PKCS1_PSS_SIGN_V2", keygen.CheckoutOptions{}, "base64+rsa-pss-sha256"},
		{"RSA_2048_PKCS1_PSS_SIGN_V2", keygen.CheckoutOptions{Encrypt: true}, "aes-256-gcm+rsa-pss-sha256"},
		{"RSA_2048_PKCS1_SIGN_V2", keygen.CheckoutOptions{TTL: 48 * time.Hour}, "base64+rsa-sha256"},
		{"ECDSA_P256_SIGN", keygen.CheckoutOptions{}, "base64+ecdsa-p256"},
		{"ECDSA_P256_SIGN", keygen.CheckoutOptions{Encrypt: true, NoExpiry: true}, "aes-256-gcm+ecdsa-p256"},
		{"ED25519_SIGN", keygen.CheckoutOptions{Algorithm: "aes-256-gcm+rsa-pss-sha256"}, "aes-256-gcm+rsa-pss-sha256"},
		{"ED25519_SIGN", keygen.CheckoutOptions{Algorithm: "base64+ecdsa-p256"}, "base64+ecdsa-p256"},
	}
	for _, tc := range tests {
		t.Run(tc.scheme+"/"+tc.wantAlg, func(t *testing.T) {
			pol := srv.CreatePolicy(devserver.PolicySpec{Scheme: tc.scheme, Floating: true})
			lic := srv.CreateLicense(devserver.LicenseSpec{PolicyID: pol.ID, Permissions: devserver.LicensePermissions})
			fp := "fp-" + strings.ToLower(tc.scheme)
			m, err := admin.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: lic.ID, Fingerprint: fp + tc.wantAlg})
			if err != nil {
				t.Fatal(err)
			}
			for _, machine := range []bool{false, true} {
				var co *keygen.Checkout
				if machine {
					co, err = admin.CheckoutMachine(ctx, m.ID, tc.o)
				} else {
					co, err = admin.CheckoutLicense(ctx, lic.ID, tc.o)
				}
				if err != nil {
					t.Fatalf("checkout (machine %v): %v", machine, err)
				}
				if co.Algorithm != tc.wantAlg {
					t.Fatalf("algorithm = %q, want %q", co.Algorithm, tc.wantAlg)
				}
				o := keygen.OpenOptions{Keys: full.PublicKeys(), LicenseKey: lic.Key}
				if machine {
					o.Fingerprint = m.Fingerprint
				}
				ds, err := keygen.OpenCertificate(co.Certificate, o)
				if err != nil {
					t.Fatalf("OpenCertificate (machine %v): %v", machine, err)
				}
				checkDatasetAgainst(t, ds, co, tc.wantAlg, machine, lic.ID, m.ID, m.Fingerprint)
				// Without the matching key the file cannot be verified.
				o.Keys = edOnly.PublicKeys()
				if _, err := keygen.OpenCertificate(co.Certificate, o); err == nil {
					t.Errorf("opened a %s file with only the Ed25519 key", tc.wantAlg)
				}
			}
		})
	}
}

// TestDevserverAuthErrors covers credential failures.
func TestDevserverAuthErrors(t *testing.T) {
	ctx := context.Background()
	srv := newDevserver(t, devserver.Options{DisableRateLimit: true, CullInterval: -1})
	tokenOnly := srv.CreatePolicy(devserver.PolicySpec{Name: "token only", AuthenticationStrategy: "TOKEN"})
	tokLic := srv.CreateLicense(devserver.LicenseSpec{PolicyID: tokenOnly.ID, Permissions: devserver.LicensePermissions})
	// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
	demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions})
	if err != nil {
		t.Fatal(err)
	}
	susp := srv.CreateLicense(devserver.LicenseSpec{PolicyID: demo.Policy.ID, Permissions: devserver.LicensePermissions, Suspended: true})
	licToken := srv.CreateToken("license", tokLic.ID)

	tests := []struct {
		name   string
		mod    func(*keygen.Config)
		is     []error
		status int
		code   string
	}{
		{"license key on TOKEN policy", withKey(tokLic.Key), []error{keygen.ErrLicenseNotAllowed, keygen.ErrForbidden}, 403, "LICENSE_NOT_ALLOWED"},
		{"wrong license key", withKey("WRONG-KEY"), []error{keygen.ErrLicenseInvalid}, 401, "LICENSE_INVALID"},
		{"suspended license key", withKey(susp.Key), []error{keygen.ErrLicenseSuspended, keygen.ErrForbidden}, 403, "LICENSE_SUSPENDED"},
		{"wrong token", withToken("admin-nope"), []error{keygen.ErrTokenInvalid}, 401, "TOKEN_INVALID"},
		{"no credentials", func(*keygen.Config) {}, []error{keygen.ErrTokenInvalid}, 401, "TOKEN_MISSING"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := devClient(t, srv, tc.mod)
			l, err := c.Me(ctx)
			if l != nil {
				t.Errorf("Me = %+v", l)
			}
			wantIs(t, err, tc.is...)
			apiErr(t, err, tc.status, tc.code)
			if keygen.IsOffline(err) || errors.Is(err, keygen.ErrNotGenuine) {
				t.Errorf("API answer %v classified as offline", err)
			}
		})
	}

	t.Run("license token on TOKEN policy", func(t *testing.T) {
		// WithToken swaps the credential of an existing client.
		c := devClient(t, srv, withKey(tokLic.Key)).WithToken(licToken)
		l, err := c.Me(ctx)
		if err != nil || l.ID != tokLic.ID {
			t.Fatalf("Me = %+v, %v", l, err)
		}
	})
	t.Run("Me with an admin token is not a license", func(t *testing.T) {
		c := devClient(t, srv, withToken(srv.AdminToken()))
		l, err := c.Me(ctx)
		if l != nil {
			t.Errorf("Me = %+v", l)
		}
		wantIs(t, err, keygen.ErrMalformedResponse)
	})
	t.Run("other license is not found", func(t *testing.T) {
		// Keygen scopes lookups by the bearer: another license's record is 404.
		c := devClient(t, srv, withToken(srv.AdminToken())).WithLicenseKey(demo.License.Key)
		_, err := c.License(ctx, tokLic.ID)
		wantIs(t, err, keygen.ErrNotFound)
		apiErr(t, err, 404, "NOT_FOUND")
	})
	t.Run("unknown account is not genuine", func(t *testing.T) {
		c := devClient(t, srv, withKey(demo.License.Key), func(c *keygen.Config) { c.Account = "00000000-0000-4000-8000-000000000000" })
		_, err := c.Me(ctx)
		wantIs(t, err, keygen.ErrNotGenuine)
		if !keygen.IsOffline(err) || !strings.Contains(err.Error(), "NOT_FOUND") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("wrong public key", func(t *testing.T) {
		other := newDevserver(t, devserver.Options{CullInterval: -1})
		c := devClient(t, srv, withKey(demo.License.Key), func(c *keygen.Config) { c.PublicKey = other.PublicKeyHex() })
		_, err := c.Me(ctx)
		wantIs(t, err, keygen.ErrNotGenuine)
	})
}

// faultCases are the transport-level failure classes, checked against
// License (a signed GET) and ActivateMachine (a signed POST).
var faultCases = []struct {
	name  string
	f     devserver.Faults
	check func(t *testing.T, err error)
}{
	{"refuse", devserver.Faults{Refuse: true}, func(t *testing.T, err error) {
		wantIs(t, err, keygen.ErrUnavailable)
		if !keygen.IsOffline(err) {
			t.Errorf("IsOffline(%v) = false", err)
		}
		var ue *keygen.UnavailableError
		if !errors.As(err, &ue) || ue.Status != 0 {
			t.Errorf("err = %#v, want UnavailableError without status", err)
		}
	}},
	{"server errors", devserver.Faults{ServerErrorRate: 1}, func(t *testing.T, err error) {
		wantIs(t, err, keygen.ErrUnavailable)
		var ue *keygen.UnavailableError
		if !errors.As(err, &ue) || (ue.Status != 500 && ue.Status != 503) || !keygen.IsOffline(err) {
			t.Errorf("err = %v", err)
		}
	}},
	{"rate limit storm", devserver.Faults{RateLimitStorm: true}, func(t *testing.T, err error) {
		wantIs(t, err, keygen.ErrRateLimited)
		var re *keygen.RateLimitError
		if !errors.As(err, &re) || re.Status != 429 || re.RetryAfter <= 0 || re.Window == "" {
			t.Fatalf("err = %#v", err)
		}
		if keygen.IsOffline(err) || errors.Is(err, keygen.ErrUnavailable) {
			t.Errorf("rate limiting %v treated as offline", err)
		}
	}},
	{"bad signature", devserver.Faults{BadSignature: true}, func(t *testing.T, err error) {
		wantIs(t, err, keygen.ErrNotGenuine)
		if !keygen.IsOffline(err) {
			t.Errorf("IsOffline(%v) = false", err)
		}
	}},
	{"no signature", devserver.Faults{NoSignature: true}, func(t *testing.T, err error) {
		wantIs(t, err, keygen.ErrNotGenuine)
	}},
	{"truncated body", devserver.Faults{TruncateBody: true}, func(t *testing.T, err error) {
		// Content-Length promises more than arrives: a transport failure,
		// never a decoded answer.
		if err == nil {
			t.Fatal("truncated body accepted")
		}
		if !keygen.IsOffline(err) {
			t.Errorf("IsOffline(%v) = false", err)
		}
	}},
}

// runFaults runs faultCases against srv with a license-key client.
func runFaults(t *testing.T, srv *devserver.Server, c *keygen.Client, licenseID string) {
	ctx := context.Background()
	for _, tc := range faultCases {
		t.Run(tc.name, func(t *testing.T) {
			srv.SetFaults(tc.f)
			defer srv.SetFaults(devserver.Faults{})
			l, err := c.License(ctx, licenseID)
			if l != nil {
				t.Errorf("License = %+v despite fault", l)
			}
			tc.check(t, err)
			m, err := c.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: licenseID, Fingerprint: "fp-fault-" + tc.name})
			if m != nil {
				t.Errorf("ActivateMachine = %+v despite fault", m)
			}
			tc.check(t, err)
			v, err := c.ValidateKey(ctx, "whatever", keygen.ValidateOptions{})
			if v != nil {
				t.Errorf("ValidateKey = %+v despite fault", v)
			}
			tc.check(t, err)
		})
	}
	t.Run("ping under faults", func(t *testing.T) {
		// Ping is unsigned: it proves reachability only.
		for _, f := range []devserver.Faults{{Refuse: true}, {ServerErrorRate: 1}} {
			srv.SetFaults(f)
			err := c.Ping(ctx)
			srv.SetFaults(devserver.Faults{})
			wantIs(t, err, keygen.ErrUnavailable)
		}
		srv.SetFaults(devserver.Faults{NoSignature: true})
		err := c.Ping(ctx)
		srv.SetFaults(devserver.Faults{})
		if err != nil {
			t.Errorf("Ping with NoSignature: %v", err)
		}
	})
	t.Run("recovered", func(t *testing.T) {
		if l, err := c.License(ctx, licenseID); err != nil || l.ID != licenseID {
			t.Fatalf("License after faults = %+v, %v", l, err)
		}
	})
}

func TestDevserverFaults(t *testing.T) {
	srv := newDevserver(t, devserver.Options{CullInterval: -1})
	// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
	demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions})
	if err != nil {
		t.Fatal(err)
	}
	runFaults(t, srv, devClient(t, srv, withKey(demo.License.Key)), demo.License.ID)
}

// TestDevserverLoopback runs a smoke pass and the fault table over a real
// listener (Host with a port, real HTTP/1.1 framing).
func TestDevserverLoopback(t *testing.T) {
	ctx := context.Background()
	srv, err := devserver.New(devserver.Options{CullInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if !strings.HasPrefix(srv.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL = %q", srv.URL())
	}
	// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
	demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions, MaxProcesses: new(1)})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var infos []keygen.ResponseInfo
	c := devClient(t, srv, withKey(demo.License.Key), func(c *keygen.Config) {
		c.OnResponse = func(i keygen.ResponseInfo) { mu.Lock(); infos = append(infos, i); mu.Unlock() }
	})
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	v, err := c.ValidateKey(ctx, demo.License.Key, keygen.ValidateOptions{})
	if err != nil || !v.Valid {
		t.Fatalf("ValidateKey = %+v, %v", v, err)
	}
	m, err := c.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: demo.License.ID, Fingerprint: "fp-loop", Components: comps("a")})
	if err != nil {
		t.Fatal(err)
	}
	v, err = c.Validate(ctx, demo.License.ID, keygen.ValidateOptions{Fingerprint: "fp-loop", Components: []string{"a"}})
	if err != nil || !v.Valid {
		t.Fatalf("Validate = %+v, %v", v, err)
	}
	co, err := c.CheckoutMachine(ctx, "fp-loop", keygen.CheckoutOptions{Encrypt: true, Include: []string{"license", "components"}})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := keygen.OpenCertificate(co.Certificate, keygen.OpenOptions{Keys: c.PublicKeys(), LicenseKey: demo.License.Key, Fingerprint: "fp-loop"})
	if err != nil || ds.Machine.ID != m.ID || len(ds.Components) != 1 || ds.License == nil {
		t.Fatalf("OpenCertificate = %+v, %v", ds, err)
	}
	p, err := c.SpawnProcess(ctx, m.ID, "1234", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SpawnProcess(ctx, m.ID, "5678", nil)
	wantIs(t, err, keygen.ErrProcessLimitExceeded)
	if err := c.KillProcess(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeactivateMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, i := range infos {
		signed := i.Path != "/v1/ping"
		if i.Verified != signed || (signed && time.Since(i.Date).Abs() > time.Minute) {
			t.Errorf("response %s %s: verified %v date %v", i.Method, i.Path, i.Verified, i.Date)
		}
		if signed && (i.RateLimit.Window != "30s" || i.RateLimit.Limit != 60 || i.RequestID == "") {
			t.Errorf("response %s %s: rate limit %+v request id %q", i.Method, i.Path, i.RateLimit, i.RequestID)
		}
	}
	mu.Unlock()

	t.Run("faults", func(t *testing.T) {
		runFaults(t, srv, c, demo.License.ID)
	})
}

// TestDevserverOnResponse checks ResponseInfo on a fake clock: the signed
// Date is exactly the server's clock and the rate-limit headers count down.
func TestDevserverOnResponse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		srv := newDevserver(t, devserver.Options{CullInterval: -1})
		defer srv.Close()
		// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
		demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions})
		if err != nil {
			t.Fatal(err)
		}
		var infos []keygen.ResponseInfo
		c := devClient(t, srv, withKey(demo.License.Key), func(c *keygen.Config) {
			c.OnResponse = func(i keygen.ResponseInfo) { infos = append(infos, i) }
		})
		time.Sleep(1500 * time.Millisecond) // off a second boundary
		start := time.Now()
		for range 3 {
			if _, err := c.License(ctx, demo.License.ID); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		if len(infos) != 4 {
			t.Fatalf("%d responses reported", len(infos))
		}
		for n, i := range infos[:3] {
			if !i.Verified || i.Status != 200 || i.Method != "GET" || i.Path != "/v1/accounts/"+srv.AccountID()+"/licenses/"+demo.License.ID {
				t.Errorf("info %d = %+v", n, i)
			}
			if d := start.Sub(i.Date); d < 0 || d >= time.Second {
				t.Errorf("info %d: date %v, server clock %v", n, i.Date, start)
			}
			rl := i.RateLimit
			if rl.Window != "30s" || rl.Limit != 60 || rl.Count != n+1 || rl.Remaining != 59-n || rl.RetryAfter != 0 ||
				rl.Reset.Before(start) || rl.Reset.After(start.Add(30*time.Second)) {
				t.Errorf("info %d: rate limit %+v", n, rl)
			}
			if i.RequestID == "" {
				t.Errorf("info %d: no request id", n)
			}
		}
		if p := infos[3]; p.Verified || !p.Date.IsZero() || p.Status != 200 || p.Path != "/v1/ping" {
			t.Errorf("ping info = %+v", p)
		}

		// A real (not injected) 429 once the 30s window is used up.
		for i := 3; i < 60; i++ {
			if _, err := c.License(ctx, demo.License.ID); err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
		}
		_, err = c.License(ctx, demo.License.ID)
		wantIs(t, err, keygen.ErrRateLimited)
		var re *keygen.RateLimitError
		if !errors.As(err, &re) || re.RetryAfter <= 0 || re.RetryAfter > 30*time.Second || re.Window != "30s" {
			t.Fatalf("err = %#v", err)
		}
		if last := infos[len(infos)-1]; last.Status != 429 || last.Verified {
			t.Errorf("429 info = %+v", last)
		}
		time.Sleep(re.RetryAfter)
		if _, err := c.License(ctx, demo.License.ID); err != nil {
			t.Fatalf("after Retry-After: %v", err)
		}
	})
}

// TestDevserverHeartbeats covers dead machines and processes on a fake
// clock: NO_REVIVE pings fail with ErrHeartbeatDead; culled processes are
// gone (ErrNotFound).
func TestDevserverHeartbeats(t *testing.T) {
	tests := []struct {
		name string
		cull string // heartbeatCullStrategy
		run  func(t *testing.T, srv *devserver.Server, c *keygen.Client, lic devserver.License)
	}{
		{"machine dead NO_REVIVE", "KEEP_DEAD", func(t *testing.T, srv *devserver.Server, c *keygen.Client, lic devserver.License) {
			ctx := context.Background()
			m, err := c.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: lic.ID, Fingerprint: "fp-hb"})
			if err != nil {
				t.Fatal(err)
			}
			if m, err = c.PingMachine(ctx, m.ID); err != nil || m.HeartbeatStatus != "ALIVE" || m.HeartbeatDuration != 60 {
				t.Fatalf("PingMachine = %+v, %v", m, err)
			}
			time.Sleep(59 * time.Second)
			if m, err = c.PingMachine(ctx, "fp-hb"); err != nil || m.HeartbeatStatus != "ALIVE" {
				t.Fatalf("PingMachine in time = %+v, %v", m, err)
			}
			time.Sleep(61 * time.Second)
			got, err := c.Machine(ctx, m.ID)
			if err != nil || got.HeartbeatStatus != "DEAD" {
				t.Fatalf("Machine = %+v, %v", got, err)
			}
			_, err = c.PingMachine(ctx, m.ID)
			wantIs(t, err, keygen.ErrHeartbeatDead)
			apiErr(t, err, 422, "MACHINE_HEARTBEAT_DEAD")
			srv.Cull() // KEEP_DEAD: still there, still dead
			_, err = c.PingMachine(ctx, m.ID)
			wantIs(t, err, keygen.ErrHeartbeatDead)
		}},
		{"process dead not culled", "KEEP_DEAD", func(t *testing.T, srv *devserver.Server, c *keygen.Client, lic devserver.License) {
			ctx := context.Background()
			m, err := c.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: lic.ID, Fingerprint: "fp-p"})
			if err != nil {
				t.Fatal(err)
			}
			p, err := c.SpawnProcess(ctx, m.ID, "42", nil)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(30 * time.Second)
			if p, err = c.PingProcess(ctx, p.ID); err != nil || p.Status != "ALIVE" || p.Interval != 60 {
				t.Fatalf("PingProcess = %+v, %v", p, err)
			}
			time.Sleep(61 * time.Second)
			if got, err := c.Process(ctx, p.ID); err != nil || got.Status != "DEAD" {
				t.Fatalf("Process = %+v, %v", got, err)
			}
			srv.Cull()
			_, err = c.PingProcess(ctx, p.ID)
			wantIs(t, err, keygen.ErrHeartbeatDead)
			apiErr(t, err, 422, "PROCESS_HEARTBEAT_DEAD")
			// A dead process still holds its slot until killed.
			if ps, err := c.MachineProcesses(ctx, m.ID); err != nil || len(ps) != 1 {
				t.Fatalf("MachineProcesses = %+v, %v", ps, err)
			}
			if err := c.KillProcess(ctx, p.ID); err != nil {
				t.Fatal(err)
			}
		}},
		{"process culled", "DEACTIVATE_DEAD", func(t *testing.T, srv *devserver.Server, c *keygen.Client, lic devserver.License) {
			ctx := context.Background()
			m, err := c.ActivateMachine(ctx, keygen.ActivateParams{LicenseID: lic.ID, Fingerprint: "fp-c"})
			if err != nil {
				t.Fatal(err)
			}
			p, err := c.SpawnProcess(ctx, m.ID, "43", nil)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(61 * time.Second)
			srv.Cull()
			if n := len(srv.Processes()); n != 0 {
				t.Fatalf("%d processes after cull", n)
			}
			_, err = c.PingProcess(ctx, p.ID)
			wantIs(t, err, keygen.ErrNotFound)
			_, err = c.Process(ctx, p.ID)
			wantIs(t, err, keygen.ErrNotFound)
			// The machine never pinged and does not require heartbeats:
			// it is NOT_STARTED, not culled.
			if got, err := c.Machine(ctx, m.ID); err != nil || got.HeartbeatStatus != "NOT_STARTED" {
				t.Fatalf("Machine = %+v, %v", got, err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newDevserver(t, devserver.Options{DisableRateLimit: true, CullInterval: -1})
				defer srv.Close()
				// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
				demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions, HeartbeatDuration: 60, ResurrectionStrategy: "NO_REVIVE", CullStrategy: tc.cull})
				if err != nil {
					t.Fatal(err)
				}
				tc.run(t, srv, devClient(t, srv, withKey(demo.License.Key)), demo.License)
			})
		})
	}
}

// TestDevserverCheckoutExpiry opens a checked-out file after its TTL on a
// fake clock.
func TestDevserverCheckoutExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		srv := newDevserver(t, devserver.Options{DisableRateLimit: true, CullInterval: -1})
		defer srv.Close()
		// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
		demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions})
		if err != nil {
			t.Fatal(err)
		}
		c := devClient(t, srv, withKey(demo.License.Key))
		co, err := c.CheckoutLicense(ctx, demo.License.ID, keygen.CheckoutOptions{TTL: time.Hour, Encrypt: true})
		if err != nil {
			t.Fatal(err)
		}
		o := keygen.OpenOptions{Keys: c.PublicKeys(), LicenseKey: demo.License.Key}
		if _, err := keygen.OpenCertificate(co.Certificate, o); err != nil {
			t.Fatal(err)
		}
		if !co.Expiry.Equal(time.Now().Add(time.Hour).Truncate(time.Millisecond)) {
			t.Errorf("expiry %v, now %v", co.Expiry, time.Now())
		}
		time.Sleep(time.Hour + time.Second)
		ds, err := keygen.OpenCertificate(co.Certificate, o)
		if !errors.Is(err, keygen.ErrCertExpired) || ds == nil || ds.License.ID != demo.License.ID {
			t.Fatalf("open after ttl = %+v, %v", ds, err)
		}
		// The signed response Date is checked against the client clock: an
		// old response would be a replay (not exercised here: devserver
		// always signs with its current clock).
	})
}

// BeforeRequest runs once per HTTP request, pages of a list included, and
// its error aborts the call before anything is sent.
func TestBeforeRequestPerPage(t *testing.T) {
	srv := newDevserver(t, devserver.Options{DisableRateLimit: true})
	// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
	demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions})
	if err != nil {
		t.Fatal(err)
	}
	var calls []string
	c := devClient(t, srv, withKey(demo.License.Key), func(cfg *keygen.Config) {
		cfg.BeforeRequest = func(ctx context.Context, method, path string) error {
			calls = append(calls, method+" "+path)
			return nil
		}
	})
	m, err := c.ActivateMachine(t.Context(), keygen.ActivateParams{LicenseID: demo.License.ID, Fingerprint: "fp-before-request-0001"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 150 // two pages of 100
	for i := range n {
		if _, err := c.SpawnProcess(t.Context(), m.ID, fmt.Sprintf("pid-%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	calls = nil
	procs, err := c.MachineProcesses(t.Context(), m.ID)
	if err != nil || len(procs) != n {
		t.Fatalf("MachineProcesses = %d, %v", len(procs), err)
	}
	if len(calls) != 2 {
		t.Fatalf("BeforeRequest calls for a two-page list = %v", calls)
	}
	stop := errors.New("budget says no")
	before := srv.Stats().Total
	c2 := devClient(t, srv, withKey(demo.License.Key), func(cfg *keygen.Config) {
		cfg.BeforeRequest = func(context.Context, string, string) error { return stop }
	})
	if _, err := c2.Machine(t.Context(), m.ID); !errors.Is(err, stop) {
		t.Fatalf("err = %v, want the hook's error", err)
	}
	if after := srv.Stats().Total; after != before {
		t.Fatalf("a request was sent despite the hook's error (%d → %d)", before, after)
	}
}
