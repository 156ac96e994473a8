package agenttest

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/keygen-agent/keygen-agent/fingerprint"
	"github.com/keygen-agent/keygen-agent/ipc"
)

// DefaultResult is the fingerprint a [FakeFP] reports unless told otherwise:
// three components (cpu, disk-0, nic-0) on a linux/amd64 host.
func DefaultResult() fingerprint.Result {
	return fingerprint.Result{
		Fingerprint: "f1a2b3c4d5e6f708f1a2b3c4d5e6f708f1a2b3c4d5e6f708f1a2b3c4d5e6f708",
		Components: []fingerprint.Component{
			{Name: "cpu", Fingerprint: "c0c0c0c0aa"},
			{Name: "disk-0", Fingerprint: "d1d1d1d1bb"},
			{Name: "nic-0", Fingerprint: "e2e2e2e2cc"},
		},
		Attributes: fingerprint.Attributes{Platform: "linux/amd64", Hostname: "test-host", Cores: 4, Memory: 8 << 30},
	}
}

// FakeFP is a fingerprinter whose result the test sets (agent.Fingerprinter).
type FakeFP struct {
	mu  sync.Mutex
	res fingerprint.Result
}

// NewFakeFP reports res (see [DefaultResult]).
func NewFakeFP(res fingerprint.Result) *FakeFP {
	return &FakeFP{res: res}
}

// Get implements agent.Fingerprinter; it returns a copy of the result.
func (f *FakeFP) Get(context.Context) (*fingerprint.Result, error) {
	r := f.Result()
	return &r, nil
}

// Result returns a copy of the current result.
func (f *FakeFP) Result() fingerprint.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.res
	r.Components = append([]fingerprint.Component(nil), f.res.Components...)
	return r
}

// SetComponents replaces the components (a hardware change).
func (f *FakeFP) SetComponents(cs []fingerprint.Component) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.res.Components = append([]fingerprint.Component(nil), cs...)
}

// FakeProcs is a process table the test controls (agent.ProcessWatcher).
type FakeProcs struct {
	mu    sync.Mutex
	alive map[int]bool
	exits map[int][]chan struct{}
}

// NewFakeProcs returns an empty table.
func NewFakeProcs() *FakeProcs {
	return &FakeProcs{alive: map[int]bool{}, exits: map[int][]chan struct{}{}}
}

// Spawn marks pid alive.
func (p *FakeProcs) Spawn(pid int) {
	p.mu.Lock()
	p.alive[pid] = true
	p.mu.Unlock()
}

// Exit marks pid dead and fires its watchers.
func (p *FakeProcs) Exit(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.alive[pid] = false
	for _, ch := range p.exits[pid] {
		close(ch)
	}
	delete(p.exits, pid)
}

// WatchExit implements agent.ProcessWatcher.
func (p *FakeProcs) WatchExit(ctx context.Context, pid int, _ uint64) (<-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.alive[pid] {
		return nil, errors.New("no such process")
	}
	ch := make(chan struct{})
	p.exits[pid] = append(p.exits[pid], ch)
	return ch, nil
}

// Alive implements agent.ProcessWatcher.
func (p *FakeProcs) Alive(pid int, _ uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.alive[pid]
}

// PeerFor is the synthetic (non-admin) peer with this pid.
func PeerFor(pid int) ipc.Peer {
	return ipc.Peer{PID: pid, UID: "1000", StartTime: uint64(pid) * 7, Exe: "/usr/bin/demo"}
}

// AdminPeer is a root peer.
var AdminPeer = ipc.Peer{PID: 1, UID: "0", Admin: true, StartTime: 1}

// SyncBuffer is a concurrency-safe log sink.
type SyncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}

// Tail returns the last n lines.
func (s *SyncBuffer) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(s.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
