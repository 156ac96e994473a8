// Package devserver is an in-memory, Keygen-compatible licensing server for
// tests, demos and integrators' CI, used the way net/http/httptest is used:
//
//	s, err := devserver.New(devserver.Options{})
//	defer s.Close()
//	demo, err := s.Demo(devserver.DemoOptions{MaxProcesses: &two})
//	// point a client at s.URL()+"/v1/accounts/"+s.AccountID()
//
// It owns one account with its own Ed25519, RSA-2048 (generated on first
// use) and ECDSA-P256 keys and serves Keygen's JSON:API routes, with Keygen's
// error envelope and codes (keygen-api app/controllers/application_controller.rb), under
// /v1/accounts/{account}/... and the single-tenant /v1/... form:
//
//	GET  /v1/ping                                 (no account, unsigned)
//	GET  /me
//	POST /licenses/actions/validate-key           (no auth)
//	GET|POST /licenses/{id|key}/actions/validate
//	GET|POST /licenses ; GET|PATCH|DELETE /licenses/{id|key}
//	POST /licenses/{id}/actions/{suspend,reinstate,check-in}
//	GET|POST /licenses/{id}/actions/check-out     (GET: raw .lic file)
//	GET|POST /licenses/{id}/entitlements ; GET /licenses/{id}/{policy,product,machines}
//	POST /licenses/{id}/tokens ; POST /products/{id}/tokens
//	POST|GET /machines ; GET|PATCH|DELETE /machines/{id|fingerprint}
//	POST /machines/{id}/actions/{ping,ping-heartbeat,reset,reset-heartbeat}
//	GET|POST /machines/{id}/actions/check-out ; GET /machines/{id}/{components,processes}
//	POST|GET /components ; GET|PATCH|DELETE /components/{id}
//	POST|GET /processes ; GET|DELETE /processes/{id} ; POST /processes/{id}/actions/ping
//	POST|GET /products, /policies, /entitlements ; POST /users   (admin token)
//
// Every account-resolved response is signed like Keygen's (Date, Digest,
// Keygen-Signature over "(request-target) host date digest" with the host
// without its port, or with it under [Options.SignHostWithPort] for
// keygen-go; Keygen-Accept-Signature selects ed25519, rsa-pss-sha256,
// rsa-sha256 or ecdsa-p256); 429s, injected 5xx and unknown accounts are
// not. Check-out certificates follow Keygen's byte for byte (keygen-api
// app/services/abstract_checkout_service.rb).
//
// It keeps the heartbeat clock of machines and processes on [Options.Now],
// culls dead ones every [Options.CullInterval] (2 minutes by default, on a
// time.Ticker, so it runs on synctest's fake clock), enforces machine and
// process limits and per-credential rate limits, and can be told to fail
// with [Server.SetFaults] or to hold requests with [Server.Hold]. Inside
// testing/synctest bubbles use [Options.NoListen] and [Server.Transport].
//
// Authorization follows Keygen's defaults: policies authenticate with
// TOKEN unless they say otherwise, licenses get Keygen's default
// permissions (no policy.read, product.read, user.read, account.read; see
// [DefaultLicensePermissions] and [Server.SetDefaultLicensePermissions]),
// check-out includes need the permissions they expose, and another
// license's records are 404. Faults can also be set over HTTP with an
// admin token at [FaultsPath] (see [ParseFault]).
//
// It must not import keygen/ (the client it tests) or agent/, and agent/
// must never import it outside tests.
package devserver
