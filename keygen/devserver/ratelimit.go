package devserver

import (
	"net/http"
	"strconv"
	"sync"
	"time"
)

// rateLimiter counts requests per key in fixed windows aligned to the
// epoch, like Rack::Attack throttles.
type rateLimiter struct {
	mu      sync.Mutex
	windows []RateWindow
	counts  map[string][]windowCount
	hits    int
}

type windowCount struct {
	start time.Time
	count int
}

// rateInfo is what the X-RateLimit-* headers report.
type rateInfo struct {
	window       string
	count, limit int
	reset        time.Time
}

func (i rateInfo) setHeaders(h http.Header) {
	if i.window == "" {
		return
	}
	rem := i.limit - i.count
	if rem < 0 {
		rem = 0
	}
	h.Set("X-RateLimit-Window", i.window)
	h.Set("X-RateLimit-Count", strconv.Itoa(i.count))
	h.Set("X-RateLimit-Limit", strconv.Itoa(i.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(rem))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(i.reset.Unix(), 10))
}

func newRateLimiter(w []RateWindow) *rateLimiter {
	for i := range w {
		if w[i].Name == "" {
			w[i].Name = w[i].Period.String()
		}
	}
	return &rateLimiter{windows: w, counts: map[string][]windowCount{}}
}

// hit counts one request for key and reports the most constrained window
// (or the exceeded one) and whether the request is allowed.
func (rl *rateLimiter) hit(key string, now time.Time) (rateInfo, bool) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.hits++
	if rl.hits%1024 == 0 {
		rl.prune(now)
	}
	cs := rl.counts[key]
	if cs == nil {
		cs = make([]windowCount, len(rl.windows))
		rl.counts[key] = cs
	}
	var best rateInfo
	bestRem := -1
	allowed := true
	for i, w := range rl.windows {
		if w.Period <= 0 || w.Limit <= 0 {
			continue
		}
		start := now.Truncate(w.Period)
		if !cs[i].start.Equal(start) {
			cs[i] = windowCount{start: start}
		}
		cs[i].count++
		info := rateInfo{window: w.Name, count: cs[i].count, limit: w.Limit, reset: start.Add(w.Period)}
		rem := w.Limit - cs[i].count
		if rem < 0 {
			if allowed {
				best, allowed = info, false
			}
			continue
		}
		if allowed && (bestRem < 0 || rem < bestRem) {
			best, bestRem = info, rem
		}
	}
	return best, allowed
}

func (rl *rateLimiter) prune(now time.Time) {
	for k, cs := range rl.counts {
		stale := true
		for i, w := range rl.windows {
			if i < len(cs) && cs[i].start.Add(w.Period).After(now) {
				stale = false
			}
		}
		if stale {
			delete(rl.counts, k)
		}
	}
}

// storm reports an exhausted first window, for the RateLimitStorm fault.
func (rl *rateLimiter) storm(now time.Time) rateInfo {
	w := RateWindow{Name: "30s", Limit: 60, Period: 30 * time.Second}
	if len(rl.windows) > 0 && rl.windows[0].Period > 0 {
		w = rl.windows[0]
	}
	start := now.Truncate(w.Period)
	return rateInfo{window: w.Name, count: w.Limit + 1, limit: w.Limit, reset: start.Add(w.Period)}
}
