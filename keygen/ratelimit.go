package keygen

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RateLimit is the X-RateLimit-* state of one response. Fields are zero when
// Keygen sent no throttling headers.
type RateLimit struct {
	Window                  string
	Count, Limit, Remaining int
	Reset                   time.Time     // end of the current period
	RetryAfter              time.Duration // from Retry-After (429 only)
}

func parseRateLimit(h http.Header, now time.Time) RateLimit {
	rl := RateLimit{
		Window:    h.Get("X-RateLimit-Window"),
		Count:     atoi(h.Get("X-RateLimit-Count")),
		Limit:     atoi(h.Get("X-RateLimit-Limit")),
		Remaining: atoi(h.Get("X-RateLimit-Remaining")),
	}
	if s := strings.TrimSpace(h.Get("X-RateLimit-Reset")); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
			rl.Reset = time.Unix(n, 0).UTC()
		}
	}
	if s := strings.TrimSpace(h.Get("Retry-After")); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			if n > 0 && n < 7*24*3600 {
				rl.RetryAfter = time.Duration(n) * time.Second
			}
		} else if t, err := http.ParseTime(s); err == nil && t.After(now) {
			rl.RetryAfter = t.Sub(now)
		}
	}
	return rl
}

func atoi(s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return 0
	}
	return n
}
