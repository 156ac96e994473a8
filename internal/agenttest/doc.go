// Package agenttest holds test doubles and a raw protocol client for the
// agent's tests, the chaos suite and the benchmarks: a fake fingerprint
// ([FakeFP]), a process table the test controls ([FakeProcs]), an in-memory
// listener that hands out net.Pipe connections with a chosen peer
// ([MemListener]), a client that speaks the wire protocol directly
// ([Client]), a concurrency-safe log sink ([SyncBuffer]) and synthetic peers
// ([PeerFor], [AdminPeer]).
//
// Everything works inside testing/synctest bubbles. The package imports only
// the standard library, fingerprint and ipc, so that the agent's own
// internal tests can use it without an import cycle.
package agenttest
