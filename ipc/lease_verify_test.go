//go:build unix

package ipc

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygen-agent/keygen-agent/leaseverify"
	"github.com/keygen-agent/keygen-agent/leaseverify/leaseverifytest"
)

// A stub agent answers lease.acquire with a well-formed result; the Go
// client with Verify refuses it and releases the lease. Genuine evidence
// for this process verifies; evidence for another process does not.
func TestClientVerifiesLease(t *testing.T) {
	iss := leaseverifytest.New("acct", "fp-this-machine", time.Now().Add(-time.Minute))
	stubKey := leaseverifytest.New("stub", "fp-this-machine", time.Now().Add(-time.Minute))
	var mode atomic.Value
	var released atomic.Int32
	var confirm atomic.Bool
	mux := NewMux()
	mux.Register(MethodAcquire, PermAny, func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p AcquireParams
		_ = json.Unmarshal(raw, &p)
		confirm.Store(p.Confirm)
		peer, _ := PeerFromContext(ctx)
		self := strconv.Itoa(peer.PID) + "@" + strconv.FormatUint(peer.StartTime, 10)
		r := AcquireResult{LeaseID: "lease-1", ProcessID: "process-lease-1", HeartbeatInterval: 600, Entitlements: []string{"PRO"}}
		switch mode.Load().(string) {
		case "genuine":
			r.Evidence = iss.Evidence("lease-1", self, time.Now())
		case "stub-signed":
			r.Evidence = stubKey.Evidence("lease-1", self, time.Now())
		case "other-process":
			r.Evidence = iss.Evidence("lease-1", strconv.Itoa(peer.PID+1)+"@"+strconv.FormatUint(peer.StartTime, 10), time.Now())
		case "tampered":
			r.Evidence = iss.Evidence("lease-1", self, time.Now())
			r.Evidence.Process.Body[len(r.Evidence.Process.Body)-3] ^= 1
		case "old":
			r.Evidence = iss.Evidence("lease-1", self, time.Now().Add(-3*time.Hour))
		}
		return r, nil
	})
	mux.Register(MethodRelease, PermAny, func(context.Context, json.RawMessage) (any, error) {
		released.Add(1)
		return struct{}{}, nil
	})
	_, path := testServer(t, ServerConfig{Mux: mux})
	c, err := DialOptions(t.Context(), ClientOptions{Path: path, App: "a", Verify: &leaseverify.Options{
		PublicKey: iss.PublicKeyHex(), Fingerprints: []string{"fp-this-machine"}, MaxAge: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		mode string
		want leaseverify.Check
	}{
		{"stub", leaseverify.CheckEvidence},
		{"stub-signed", leaseverify.CheckMachineFile},
		{"other-process", leaseverify.CheckProcess},
		{"tampered", leaseverify.CheckDigest},
		{"old", leaseverify.CheckDate},
		{"genuine", ""},
	} {
		mode.Store(tc.mode)
		before := released.Load()
		l, err := c.Acquire(t.Context(), AcquireParams{})
		if !confirm.Load() {
			t.Errorf("%s: the client did not ask for confirmed evidence", tc.mode)
		}
		if tc.want == "" {
			if err != nil || l == nil {
				t.Fatalf("%s: %v", tc.mode, err)
			}
			if _, err := VerifyLease(&AcquireResult{LeaseID: l.ID, Evidence: iss.Evidence(l.ID, "1@1", time.Now())},
				leaseverify.Options{PublicKey: iss.PublicKeyHex(), Fingerprints: []string{"fp-this-machine"}}); !leaseverify.IsCheck(err, leaseverify.CheckProcess) {
				t.Errorf("VerifyLease as this process, evidence of 1@1: %v", err)
			}
			continue
		}
		if !leaseverify.IsCheck(err, tc.want) || l != nil {
			t.Errorf("%s: lease %v err %v, want check %s", tc.mode, l, err, tc.want)
		}
		if released.Load() != before+1 {
			t.Errorf("%s: the refused lease was not released", tc.mode)
		}
	}
}
