//go:build unix && !linux && !darwin && !freebsd

package ipc

import (
	"errors"
	"log/slog"
	"net"
	"runtime"
)

// ErrPeerCredentialsUnsupported is why a server on this OS refuses every
// connection: it cannot tell who is calling, so it fails closed. Clients
// (Dial) work everywhere.
var ErrPeerCredentialsUnsupported = errors.New("peer credentials are not implemented on " + runtime.GOOS)

func peerCredentials(net.Conn, int, *slog.Logger) (Peer, error) {
	return Peer{}, ErrPeerCredentialsUnsupported
}
