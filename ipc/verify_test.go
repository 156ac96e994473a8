package ipc

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestClientVerifiesServer: the default trust accepts a server running as
// the client's own user; a trust that excludes it refuses the server before
// anything is sent, with ErrUntrustedServer.
func TestClientVerifiesServer(t *testing.T) {
	_, path := testServer(t, ServerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialVerified(ctx, path, defaultTrust(nil))
	if err != nil {
		t.Fatalf("own-user server refused: %v", err)
	}
	c.Close()

	// A trust naming only an account this test does not run as.
	strict := serverTrust{users: []string{"4242", "S-1-5-21-0-0-0-4242"}}
	_, err = dialVerified(ctx, path, strict)
	if !errors.Is(err, ErrUntrustedServer) {
		t.Fatalf("server running as the test's user accepted by a root-only trust: %v", err)
	}
	t.Logf("refused: %v", err)

	// Through the public API, with the default trust.
	c2, err := DialOptions(ctx, ClientOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
}
