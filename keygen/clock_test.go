package keygen_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// Issue 14 defect 6, the client's part: a validation is bound to its
// request by its nonce, so its signed Date is taken whatever the local
// clock says (and reported, for the caller to learn the clock offset);
// every other answer's Date is checked against the trusted clock.
func TestDefect6_NonceBoundValidationIgnoresLocalClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		srv := newDevserver(t, devserver.Options{DisableRateLimit: true, CullInterval: -1})
		demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions})
		if err != nil {
			t.Fatal(err)
		}
		for _, skew := range []time.Duration{6 * time.Minute, -6 * time.Minute, 3 * time.Hour, 365 * 24 * time.Hour, -365 * 24 * time.Hour} {
			local := func() time.Time { return time.Now().Add(skew) }
			c := devClient(t, srv, withKey(demo.License.Key), func(cfg *keygen.Config) { cfg.Now = local })
			v, err := c.ValidateKey(ctx, demo.License.Key, keygen.ValidateOptions{})
			if err != nil {
				t.Fatalf("local clock %v: validate: %v", skew, err)
			}
			if v.Date.IsZero() || v.Sent.IsZero() || v.Received.IsZero() {
				t.Fatalf("local clock %v: validation without Date/Sent/Received: %+v", skew, v)
			}
			if got := v.Sent.Sub(v.Date); got < skew-time.Second || got > skew+time.Second {
				t.Errorf("local clock %v: Sent-Date = %v", skew, got)
			}
			// Other answers are checked against the clock: a wrong one
			// makes them look replayed...
			if _, err := c.License(ctx, demo.License.ID); skew > 5*time.Minute && !errors.Is(err, keygen.ErrResponseTooOld) {
				t.Errorf("local clock %v: license read: %v, want ErrResponseTooOld", skew, err)
			}
			// ...and pass once the caller corrects it with the offset.
			off := v.Date.Sub(v.Sent)
			cc := devClient(t, srv, withKey(demo.License.Key), func(cfg *keygen.Config) {
				cfg.Now = local
				cfg.TrustedNow = func() time.Time { return local().Add(off) }
			})
			if _, err := cc.License(ctx, demo.License.ID); err != nil {
				t.Errorf("local clock %v, corrected: license read: %v", skew, err)
			}
		}
	})
}

// A signed validation answer from a server whose clock is 3 h fast (a
// self-hosted Keygen) is taken too, and replayed non-validation answers
// are still refused on the corrected clock.
func TestDefect6_ServerDateSkewAndReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		srv := newDevserver(t, devserver.Options{DisableRateLimit: true, CullInterval: -1})
		demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions})
		if err != nil {
			t.Fatal(err)
		}
		srv.SetFaults(devserver.Faults{DateSkew: 3 * time.Hour})
		var seen []keygen.ResponseInfo
		c := devClient(t, srv, withKey(demo.License.Key), func(cfg *keygen.Config) {
			cfg.OnResponse = func(i keygen.ResponseInfo) { seen = append(seen, i) }
		})
		v, err := c.ValidateKey(ctx, demo.License.Key, keygen.ValidateOptions{})
		if err != nil {
			t.Fatalf("validate against a server 3h fast: %v", err)
		}
		if ahead := v.Date.Sub(time.Now()); ahead < 3*time.Hour-time.Second || ahead > 3*time.Hour+time.Second {
			t.Fatalf("Date %v ahead, want 3h", ahead)
		}
		if len(seen) != 1 || !seen[0].NonceBound || !seen[0].Verified {
			t.Fatalf("reported %+v, want one verified nonce-bound answer", seen)
		}
		// On the corrected clock, a 10-minute-old answer is a replay.
		off := v.Date.Sub(v.Sent)
		srv.SetFaults(devserver.Faults{DateSkew: 3*time.Hour - 10*time.Minute})
		cc := devClient(t, srv, withKey(demo.License.Key), func(cfg *keygen.Config) {
			cfg.TrustedNow = func() time.Time { return time.Now().Add(off) }
		})
		if _, err := cc.License(ctx, demo.License.ID); !errors.Is(err, keygen.ErrResponseTooOld) {
			t.Fatalf("replayed answer on the corrected clock: %v, want ErrResponseTooOld", err)
		}
	})
}
