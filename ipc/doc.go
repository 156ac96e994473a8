// Package ipc owns the local protocol between keygen-agent and the apps it
// licenses: the transport (a Unix domain socket on Linux and macOS, a named
// pipe on Windows), the peer credentials the kernel reports for each
// connection, the JSON-RPC 2.0 framing (one JSON object per line), the wire
// types and error codes, the server-side [Mux] and [Server], and the Go
// [Client] that apps import. It also provides [WatchExit] and
// [ProcessAlive], the process-liveness primitives the agent uses to release
// a lease when the app that holds it dies.
//
// The contract for clients in other languages is docs/protocol.md.
//
// Package ipc must not import the daemon (agent, cache, bbolt, gopsutil,
// kardianos): apps link the client and must not pull the daemon in.
// The method handlers themselves live in package agent.
package ipc
