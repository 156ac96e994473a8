package agenttest

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/keygen-agent/keygen-agent/ipc"
)

// MemListener is a net.Listener that hands out net.Pipe connections, each
// with the peer its dialer chose. Serve it with an ipc.Server whose
// PeerFunc is [MemListener.PeerOf].
type MemListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	peers  map[net.Conn]ipc.Peer
}

// NewMemListener returns an open listener.
func NewMemListener() *MemListener {
	return &MemListener{conns: make(chan net.Conn), closed: make(chan struct{}), peers: map[net.Conn]ipc.Peer{}}
}

// Dial connects as peer and returns the client end once the server end has
// been accepted. It fails when the listener closes or ctx ends first.
func (l *MemListener) Dial(ctx context.Context, peer ipc.Peer) (net.Conn, error) {
	s, c := net.Pipe()
	l.mu.Lock()
	l.peers[s] = peer
	l.mu.Unlock()
	var err error
	select {
	case l.conns <- s:
		return c, nil
	case <-l.closed:
		err = net.ErrClosed
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.mu.Lock()
	delete(l.peers, s)
	l.mu.Unlock()
	s.Close()
	c.Close()
	return nil, err
}

// PeerOf returns (and forgets) the peer a connection was dialed with; it is
// an ipc.ServerConfig.PeerFunc, which the server calls once a connection.
func (l *MemListener) PeerOf(c net.Conn) (ipc.Peer, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.peers[c]
	if !ok {
		return ipc.Peer{}, errors.New("unknown conn")
	}
	delete(l.peers, c)
	return p, nil
}

// Accept implements net.Listener.
func (l *MemListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener; it is safe to call more than once.
func (l *MemListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr implements net.Listener.
func (l *MemListener) Addr() net.Addr { return memAddr{} }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }
