package fingerprint

import (
	"context"
	"errors"
	"testing"
)

// BenchmarkCompute is the cold cost: identity, every collector, derivation.
func BenchmarkCompute(b *testing.B) {
	for _, bc := range []struct{ name, root string }{{"fake-root", serverRoot}, {"host", "/"}} {
		b.Run(bc.name, func(b *testing.B) {
			o := Options{AppID: testApp, Root: bc.root, Getenv: noEnv}
			if _, err := Compute(context.Background(), o); errors.Is(err, ErrNoMachineID) {
				b.Skip(err)
			}
			for b.Loop() {
				if _, err := Compute(context.Background(), o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCacheGet is the cost of Get once the Result is cached.
func BenchmarkCacheGet(b *testing.B) {
	c := NewCache(Options{AppID: testApp, Root: serverRoot, Getenv: noEnv})
	if _, err := c.Get(context.Background()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := c.Get(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
