package ipc

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/windows"

	"github.com/keygen-agent/keygen-agent/internal/procwatch"
)

func TestPeerCredentialsAreTheCaller(t *testing.T) {
	_, path := testServer(t, ServerConfig{})
	c := testDial(t, path)
	p, err := c.Peer(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != os.Getpid() {
		t.Errorf("PID %d, want %d", p.PID, os.Getpid())
	}
	if !strings.HasPrefix(p.UID, "S-1-") {
		t.Errorf("UID %q is not a SID", p.UID)
	}
	if st, err := procwatch.StartTime(os.Getpid()); err != nil || p.StartTime != st {
		t.Errorf("StartTime %d, want %d (%v)", p.StartTime, st, err)
	}
	t.Logf("peer %+v", p)
}

func TestListenRejectsNonPipePath(t *testing.T) {
	if _, err := Listen(`C:\kga.sock`, ListenOptions{}); err == nil {
		t.Fatal("non-pipe path accepted")
	}
}

func TestCheckClientStart(t *testing.T) {
	accepted := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	ft := func(tm time.Time) uint64 {
		f := windows.NsecToFiletime(tm.UnixNano())
		return uint64(f.HighDateTime)<<32 | uint64(f.LowDateTime)
	}
	if err := checkClientStart(ft(accepted.Add(-time.Hour)), accepted); err != nil {
		t.Errorf("client started before accept refused: %v", err)
	}
	if err := checkClientStart(ft(accepted.Add(-time.Millisecond)), accepted); err != nil {
		t.Errorf("client started just before accept refused: %v", err)
	}
	if err := checkClientStart(ft(accepted.Add(time.Millisecond)), accepted); !errors.Is(err, errClientNewer) {
		t.Errorf("process created after accept: %v, want errClientNewer", err)
	}
}

// TestPeerPinsClientProcess: while the connection is open the server holds
// the client's process handle (pinned in procwatch); it is released when
// the connection ends.
func TestPeerPinsClientProcess(t *testing.T) {
	_, path := testServer(t, ServerConfig{})
	c := testDial(t, path)
	if _, err := c.Peer(t.Context()); err != nil {
		t.Fatal(err)
	}
	n := 0
	unpins.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("%d pinned connections, want 1", n)
	}
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n = 0
		unpins.Range(func(any, any) bool { n++; return true })
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pin not released after the connection closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
