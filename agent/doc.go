// Package agent is the keygen-agent daemon core. It owns the license
// lifecycle (validate, activate, check out and verify the machine file,
// offline operation bounded by signed time), the lease manager (one Keygen
// process per running app instance, its heartbeats, release on exit),
// reconciliation after a crash, the shared request budget, configuration and
// its hot reload, and the handlers of the local IPC methods.
//
// It works under Keygen's defaults (authz.go): a license token authenticates
// where the policy allows tokens (TOKEN is Keygen's default strategy) and
// the license key where it does not; check-outs include only what the
// license may read; the heartbeat settings come from the machine record and
// the policy-only strategies from the config when the policy is unreadable.
// Every configuration field is described once, in config.go's table.
//
// It speaks to Keygen only through package keygen, to disk only through
// package cache, and to apps only through package ipc's Mux; it never opens
// sockets or HTTP connections itself.
package agent
