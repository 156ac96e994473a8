package keygen

import (
	"errors"
	"net/http"
	"sync"
	"testing"
)

// The refusals of concerns/authentication.rb and application_controller.rb
// map onto their own classes, so the agent can tell "wrong credential kind
// for this policy", "this license may not log in" and "missing permission"
// apart from each other and from an outage.
func TestAuthorizationErrorClasses(t *testing.T) {
	cases := []struct {
		status int
		code   string
		is     []error
		not    []error
	}{
		{403, "LICENSE_NOT_ALLOWED", []error{ErrLicenseNotAllowed, ErrAuthNotAllowed, ErrForbidden}, []error{ErrTokenNotAllowed, ErrLoginRefused, ErrAccessDenied}},
		{403, "TOKEN_NOT_ALLOWED", []error{ErrTokenNotAllowed, ErrAuthNotAllowed, ErrForbidden}, []error{ErrLicenseNotAllowed, ErrLoginRefused, ErrAccessDenied}},
		{403, "LICENSE_SUSPENDED", []error{ErrLoginRefused, ErrLicenseSuspended}, []error{ErrAuthNotAllowed, ErrAccessDenied}},
		{403, "LICENSE_BANNED", []error{ErrLoginRefused}, []error{ErrAuthNotAllowed, ErrAccessDenied}},
		{403, "LICENSE_EXPIRED", []error{ErrLoginRefused, ErrLicenseExpired}, []error{ErrAuthNotAllowed}},
		{403, "USER_BANNED", []error{ErrLoginRefused}, []error{ErrAuthNotAllowed}},
		{403, "", []error{ErrAccessDenied, ErrForbidden}, []error{ErrLoginRefused, ErrAuthNotAllowed}},
		{422, "LICENSE_EXPIRED", []error{ErrLicenseExpired}, []error{ErrLoginRefused}},
	}
	f := newFake(t)
	var mu sync.Mutex
	var cur int
	f.handle("POST /machines", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tc := cases[cur]
		mu.Unlock()
		writeErr(w, tc.status, tc.code, "Access denied", "refused")
	})
	c := f.client(t)
	for i, tc := range cases {
		mu.Lock()
		cur = i
		mu.Unlock()
		_, err := c.ActivateMachine(t.Context(), ActivateParams{LicenseID: testLicenseID, Fingerprint: testFP})
		for _, s := range tc.is {
			if !errors.Is(err, s) {
				t.Errorf("%d %s: %v is not %v", tc.status, tc.code, err, s)
			}
		}
		for _, s := range tc.not {
			if errors.Is(err, s) {
				t.Errorf("%d %s: %v is also %v", tc.status, tc.code, err, s)
			}
		}
		if IsOffline(err) {
			t.Errorf("%s: classified offline", tc.code)
		}
	}
}

// Scopes a policy may require (license_validation_service.rb): machine and
// environment travel in meta.scope when set.
func TestValidateSendsMachineAndEnvironmentScope(t *testing.T) {
	f := newFake(t)
	var mu sync.Mutex
	var scope map[string]any
	f.handle("POST /licenses/actions/validate-key", func(w http.ResponseWriter, r *http.Request) {
		meta := readBody(t, r)["meta"].(map[string]any)
		mu.Lock()
		scope, _ = meta["scope"].(map[string]any)
		mu.Unlock()
		writeJSON(w, 200, map[string]any{"data": licenseRes(testLicenseID),
			"meta": map[string]any{"valid": true, "code": "VALID", "nonce": meta["nonce"]}})
	})
	c := f.client(t)
	if _, err := c.ValidateKey(t.Context(), testKey, ValidateOptions{Fingerprint: testFP, Machine: testMachineID, Environment: "staging"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if scope["machine"] != testMachineID || scope["environment"] != "staging" || scope["fingerprint"] != testFP {
		t.Errorf("scope %v", scope)
	}
}

// A license token authenticates every call that needs a login as a bearer,
// while validate-key carries the license key in its body and sends no
// Authorization (an expired token, or one the policy does not allow, would
// make Keygen refuse the validation).
func TestTokenAuthorization(t *testing.T) {
	f := newFake(t)
	var mu sync.Mutex
	auth := map[string]string{}
	f.handle("POST /licenses/actions/validate-key", func(w http.ResponseWriter, r *http.Request) {
		meta := readBody(t, r)["meta"].(map[string]any)
		mu.Lock()
		auth["validate"] = r.Header.Get("Authorization") + "|" + meta["key"].(string)
		mu.Unlock()
		writeJSON(w, 200, map[string]any{"data": licenseRes(testLicenseID),
			"meta": map[string]any{"valid": true, "code": "VALID", "nonce": meta["nonce"]}})
	})
	f.handle("POST /machines", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth["activate"] = r.Header.Get("Authorization")
		mu.Unlock()
		writeJSON(w, 201, map[string]any{"data": machineRes(testMachineID)})
	})
	c := f.client(t, func(cfg *Config) { cfg.LicenseKey, cfg.Token = testKey, "activ-tok" })
	if _, err := c.ValidateKey(t.Context(), testKey, ValidateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ActivateMachine(t.Context(), ActivateParams{LicenseID: testLicenseID, Fingerprint: testFP}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if auth["activate"] != "Bearer activ-tok" {
		t.Errorf("activate Authorization %q", auth["activate"])
	}
	if auth["validate"] != "|"+testKey {
		t.Errorf("validate-key Authorization|key %q", auth["validate"])
	}
}
