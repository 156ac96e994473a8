package ipc

import (
	"os"
	"strings"
	"testing"

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
