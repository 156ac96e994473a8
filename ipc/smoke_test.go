package ipc

import (
	"context"
	"encoding/json"
	"testing"
)

func TestSmoke(t *testing.T) {
	ln, path := testListen(t)
	mux := NewMux()
	mux.Register(MethodAcquire, PermAny, func(ctx context.Context, p json.RawMessage) (any, error) {
		return AcquireResult{LeaseID: "l1", Entitlements: []string{"A"}}, nil
	})
	s := NewServer(ServerConfig{Mux: mux})
	go s.Serve(ln)
	defer s.Close()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := c.Acquire(context.Background(), AcquireParams{App: "x"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Peer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v %+v", l.Entitlements, p)
}
