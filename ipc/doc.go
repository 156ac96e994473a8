// Package ipc is what apps import to talk to keygen-agent, and the local
// protocol's one owner: the transport (a Unix domain socket on every unix,
// a named pipe on Windows), the peer credentials the kernel reports for
// each connection (SO_PEERCRED on Linux, LOCAL_PEERCRED and LOCAL_PEERPID
// on macOS, LOCAL_PEERCRED on FreeBSD, the pipe client's token on Windows;
// elsewhere a server fails closed and refuses every connection), the
// JSON-RPC 2.0 framing (one JSON object per line), the wire types and error
// codes, the server-side [Mux] and [Server], and the Go [Client].
//
// The contract for clients in other languages is docs/protocol.md.
//
// Package ipc must not import the daemon (agent, cache, keygen, bbolt,
// gopsutil, kardianos): apps link the client and must not pull the daemon
// in; internal/deptest holds the rule. The method handlers live in
// package agent, and process watching (release a lease when its app dies)
// in internal/procwatch. Default socket paths come from internal/paths.
//
// The client stays in this package rather than a package of its own
// (Tailscale's client/local): it shares the wire types, the framing and
// the error codes with the server, so a separate package would need a
// third one for those and every app's import path would change, for the
// gain of hiding NewServer from an app's documentation.
package ipc
