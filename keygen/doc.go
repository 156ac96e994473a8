// Package keygen is the agent's typed client for the Keygen API and its
// offline trust anchor.
//
// It owns three things:
//
//   - [Client]: JSON:API requests to Keygen (licenses, machines, components,
//     processes, validation, check-out), with typed errors ([Error] and the
//     ErrX sentinels), rate-limit headers ([RateLimit]) and Keygen's response
//     signatures verified before any byte of a response is trusted
//     (Keygen-Signature over "(request-target) host date digest", the
//     Digest of the body, and a replay window on Date).
//   - Certificates: license files and machine files ([ParseCertificate],
//     [OpenCertificate]): parse, verify the signature over the still-encrypted
//     payload, then decrypt and decode into a [Dataset].
//   - Signed license keys ([VerifyLicenseKey]).
//
// The package has no mutable package state, no global locks and starts no
// goroutines: a [Client] is immutable after [NewClient] and safe for
// concurrent use, and every request is bounded by its context. It must not
// know about leases, sockets or the local cache.
package keygen
