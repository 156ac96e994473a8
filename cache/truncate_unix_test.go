//go:build unix

package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Truncating agent.db under an open Store must not hang it: every call
// after the fault fails fast with ErrCorrupt, OnFault is told once, and
// Close returns.
func TestTruncatedWhileOpenFailsFast(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.db")
	var faults atomic.Int32
	var faultErr atomic.Value
	s, err := Open(path, Options{OnFault: func(err error) {
		faults.Add(1)
		faultErr.Store(err)
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Enough data that reads touch pages past the first few.
	for i := range 300 {
		if err := s.PutMeta(fmt.Sprintf("k%03d", i), []byte(strings.Repeat("v", 900))); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	done := make(chan []error, 1)
	go func() {
		var errs []error
		for i := range 300 {
			_, err := s.Meta(fmt.Sprintf("k%03d", i))
			errs = append(errs, err)
			errs = append(errs, s.PutMeta(fmt.Sprintf("n%03d", i), []byte("x")))
		}
		done <- errs
	}()
	var errs []error
	select {
	case errs = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("store calls hang after agent.db was truncated")
	}
	corrupt := 0
	for _, err := range errs {
		if errors.Is(err, ErrCorrupt) {
			corrupt++
		}
	}
	if corrupt == 0 {
		t.Fatalf("no call reported ErrCorrupt after truncation: %v", errs[:4])
	}
	if !errors.Is(errs[len(errs)-1], ErrCorrupt) || !errors.Is(errs[len(errs)-2], ErrCorrupt) {
		t.Fatalf("calls after the fault: %v, %v; want ErrCorrupt (the store is unusable)", errs[len(errs)-2], errs[len(errs)-1])
	}
	if n := faults.Load(); n != 1 {
		t.Fatalf("OnFault called %d times, want 1", n)
	}
	if err, _ := faultErr.Load().(error); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("OnFault error %v", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close hangs after a fault")
	}
}
