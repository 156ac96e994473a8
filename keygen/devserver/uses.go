package devserver

import (
	"math"
	"strconv"
)

// Metered usage (keygen-api's uses_controller.rb and Licenses::UsagePolicy
// in app/policies/licenses/usage_policy.rb).
//
//   - increment-usage adds meta.increment (default 1). Admins, the
//     license's product, the license itself (permission
//     license.usage.increment) and its owner (unless the policy is
//     protected) may.
//   - decrement-usage subtracts meta.decrement (default 1). Only admins
//     and the license's product may: a license or user bearer is 403.
//   - license.rb refuses a count above maxUses (the license's override,
//     else the policy's) with 422 USES_LIMIT_EXCEEDED, "usage exceeds
//     maximum allowed for license (N)", and one below zero with 422
//     USES_INVALID, "must be greater than or equal to 0"; both point at
//     /data/attributes/uses. A count beyond the integer column is 400
//     "integer is too large".
//   - Both lock the license row FOR UPDATE NOWAIT: while another update
//     holds it (Server.LockUses) the answer is 409 "failed to increment
//     due to another conflicting update", nothing counted.

func (c *call) hIncrementUsage() (*reply, error) { return c.changeUsage("increment", 1) }
func (c *call) hDecrementUsage() (*reply, error) { return c.changeUsage("decrement", -1) }

func (c *call) changeUsage(param string, sign int) (*reply, error) {
	perm := "license.usage." + param
	l, err := c.findLicense(c.r.PathValue("id"), perm)
	if err != nil {
		return nil, err
	}
	switch c.auth.kind {
	case "admin":
	case "product":
	case "license":
		if sign < 0 {
			return nil, forbidden()
		}
	case "user":
		if sign < 0 || c.s.licensePolicy(l).Protected || l.OwnerID != c.auth.id {
			return nil, forbidden()
		}
	default:
		return nil, forbidden()
	}
	if c.s.usesLocked[l.ID] > 0 {
		// uses_controller.rb: the NOWAIT row lock failed (StaleObjectError
		// or StatementInvalid) -> render_conflict, with the same detail
		// for a decrement.
		return nil, newError(409, "failed to increment due to another conflicting update", "").pointer("/data/attributes/uses")
	}
	doc, derr := decodeBody(c.body)
	if derr != nil {
		return nil, derr
	}
	n := int64(1)
	present, isNull, merr := doc.metaValue(param, "integer", &n)
	if merr != nil {
		return nil, merr
	}
	if present && isNull {
		return nil, typeMismatch("/meta/"+param, "null", "integer")
	}
	next := int64(l.Uses) + int64(sign)*n
	if n > math.MaxInt32 || n < math.MinInt32 || next > math.MaxInt32 || next < math.MinInt32 {
		return nil, badRequest("integer is too large", "").pointer("/meta/" + param)
	}
	if next != int64(l.Uses) {
		if max := firstInt(l.MaxUses, c.s.licensePolicy(l).MaxUses); max != nil && next > int64(*max) {
			return nil, unprocessable("/data/attributes/uses", "usage exceeds maximum allowed for license ("+strconv.Itoa(*max)+")", "USES_LIMIT_EXCEEDED")
		}
		if next < 0 {
			return nil, unprocessable("/data/attributes/uses", "must be greater than or equal to 0", "USES_INVALID")
		}
	}
	l.Uses = int(next)
	l.Updated = c.now.UTC()
	return ok(data(c.s.renderLicense(l, c.now)))
}
