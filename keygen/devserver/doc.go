// Package devserver is an in-memory, Keygen-compatible licensing server for
// tests, demos and integrators' CI, used the way net/http/httptest is used.
//
// It owns one account with its own Ed25519, RSA-2048 and ECDSA-P256 keys and
// serves Keygen's JSON:API routes under /v1/accounts/{account}/... (and the
// single-tenant /v1/... form): validation, licenses, machines with inline
// components, processes, entitlements and license/machine check-out
// certificates, all with Keygen's error envelope and codes (see
// ../shared/KEYGEN.md). Every account-resolved response is signed like
// Keygen's (Date, Digest, Keygen-Signature); 429s and injected 5xx are not.
//
// It keeps the heartbeat clock of machines and processes, culls dead ones
// every [Options.CullInterval] of its clock, enforces machine and process
// limits and per-credential rate limits, and can be told to fail through
// [Server.SetFaults]. Under testing/synctest use [Options.NoListen] and
// [Server.Transport].
//
// It must not import keygen/ (the client it tests) or agent/, and agent/ must
// never import it.
package devserver
