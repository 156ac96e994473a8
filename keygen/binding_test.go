package keygen

import (
	"errors"
	"net/http"
	"testing"
)

// A signed answer about another process, pid, lease or license is refused:
// a signature covers method and path, not the request body, so a replayed
// spawn answer verifies (it made two leases share one Keygen process).
func TestAnswersBoundToRequests(t *testing.T) {
	f := newFake(t)
	var spawnAnswer map[string]any
	f.handle("POST /processes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 201, map[string]any{"data": spawnAnswer})
	})
	f.handle("POST /processes/{id}/actions/ping", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"data": processRes("p-other", "1@1")})
	})
	f.handle("GET /processes/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"data": processRes("p-other", "1@1")})
	})
	otherLicense := "0b0b0b0b-0000-4000-8000-000000000000"
	f.handle("POST /licenses/{id}/actions/check-out", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"data": map[string]any{
			"id": "lf1", "type": "license-files",
			"attributes": map[string]any{"certificate": "-----BEGIN LICENSE FILE-----\nx\n-----END LICENSE FILE-----\n", "issued": "2026-06-01T12:00:00Z", "ttl": nil},
			"relationships": map[string]any{
				"license": map[string]any{"data": map[string]any{"type": "licenses", "id": otherLicense}},
			},
		}})
	})
	c := f.client(t)
	ctx := t.Context()
	withLease := func(pid, lease string) map[string]any {
		p := processRes("p1", pid)
		p["attributes"].(map[string]any)["metadata"] = map[string]any{"leaseId": lease}
		return p
	}

	// The genuine answer.
	spawnAnswer = withLease("100@5", "lease_a")
	if _, err := c.SpawnProcess(ctx, testMachineID, "100@5", map[string]any{"leaseId": "lease_a"}); err != nil {
		t.Fatalf("genuine spawn answer refused: %v", err)
	}
	// The same answer replayed to another spawn.
	if _, err := c.SpawnProcess(ctx, testMachineID, "200@7", map[string]any{"leaseId": "lease_b"}); !errors.Is(err, ErrAnswerMismatch) || !errors.Is(err, ErrNotGenuine) {
		t.Fatalf("spawn answered for another pid: %v, want ErrAnswerMismatch", err)
	}
	// Same pid (a reused kernel pid would differ in start time, but say
	// it matched): another lease's answer.
	if _, err := c.SpawnProcess(ctx, testMachineID, "100@5", map[string]any{"leaseId": "lease_b"}); !errors.Is(err, ErrAnswerMismatch) {
		t.Fatalf("spawn answered for another lease: %v, want ErrAnswerMismatch", err)
	}
	// Another machine's process.
	other := withLease("100@5", "lease_a")
	other["relationships"].(map[string]any)["machine"] = map[string]any{"data": map[string]any{"type": "machines", "id": "m-other"}}
	spawnAnswer = other
	if _, err := c.SpawnProcess(ctx, testMachineID, "100@5", map[string]any{"leaseId": "lease_a"}); !errors.Is(err, ErrAnswerMismatch) {
		t.Fatalf("spawn answered with another machine's process: %v, want ErrAnswerMismatch", err)
	}
	if _, err := c.PingProcess(ctx, "p1"); !errors.Is(err, ErrAnswerMismatch) {
		t.Fatalf("ping answered about another process: %v, want ErrAnswerMismatch", err)
	}
	if _, err := c.Process(ctx, "p1"); !errors.Is(err, ErrAnswerMismatch) {
		t.Fatalf("read answered about another process: %v, want ErrAnswerMismatch", err)
	}
	if _, err := c.CheckoutLicense(ctx, testLicenseID, CheckoutOptions{}); !errors.Is(err, ErrAnswerMismatch) {
		t.Fatalf("license check-out answered for another license: %v, want ErrAnswerMismatch", err)
	}
}
