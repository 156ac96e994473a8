package fingerprint

import (
	"context"
	"sync"
)

// Cache computes the Result once and serves it until Refresh. It is safe
// for concurrent use. Failures are not cached, so fixing the identity
// configuration takes effect on the next Get.
type Cache struct {
	o  Options
	mu sync.Mutex
	r  *Result
}

// NewCache returns a Cache for o. Nothing is computed until Get.
func NewCache(o Options) *Cache { return &Cache{o: o} }

// Get returns the cached Result, computing it on first use. Callers get
// their own copy and may modify it.
func (c *Cache) Get(ctx context.Context) (*Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.r == nil {
		r, err := Compute(ctx, c.o)
		if err != nil {
			return nil, err
		}
		c.r = r
	}
	return c.r.clone(), nil
}

// Refresh recomputes the Result (hardware may have changed) and returns it.
// On error the previous Result stays cached.
func (c *Cache) Refresh(ctx context.Context) (*Result, error) {
	r, err := Compute(ctx, c.o)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.r = r
	c.mu.Unlock()
	return r.clone(), nil
}
