package keygen

import (
	"context"
	"net/http"
)

// CheckIn checks the license in (POST /licenses/{id}/actions/check-in,
// permits_controller.rb): Keygen sets lastCheckIn to now, moving
// nextCheckIn one checkInInterval on. A policy that does not require
// check-ins answers 422.
func (c *Client) CheckIn(ctx context.Context, licenseID string) (*License, error) {
	return c.licenseAction(ctx, licenseID, "check-in", nil)
}

// IncrementUsage adds n uses (POST /licenses/{id}/actions/increment-usage,
// uses_controller.rb, meta.increment). Past the policy's maxUses Keygen
// answers 422 with a uses error (license.rb validates uses ≤ max_uses).
func (c *Client) IncrementUsage(ctx context.Context, licenseID string, n int) (*License, error) {
	return c.licenseAction(ctx, licenseID, "increment-usage", map[string]any{"meta": map[string]any{"increment": n}})
}

// DecrementUsage takes n uses back (POST .../actions/decrement-usage,
// meta.decrement). Below zero Keygen answers 422.
func (c *Client) DecrementUsage(ctx context.Context, licenseID string, n int) (*License, error) {
	return c.licenseAction(ctx, licenseID, "decrement-usage", map[string]any{"meta": map[string]any{"decrement": n}})
}

func (c *Client) licenseAction(ctx context.Context, licenseID, action string, body any) (*License, error) {
	return c.licenseDoc(ctx, request{method: http.MethodPost, path: "/licenses/" + esc(licenseID) + "/actions/" + action, body: body})
}
