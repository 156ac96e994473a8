//go:build !windows

package ipc

import (
	"net"
	"time"
)

// firstData reads nothing: unix peer credentials are the socket's and
// need no message first.
func firstData(net.Conn, time.Duration) ([]byte, error) { return nil, nil }

// releasePeer: unix peers hold nothing for the connection.
func releasePeer(net.Conn) {}
