// Package budget owns the agent's single request budget: every Keygen API
// call the agent makes (machine and process pings, spawns, kills, validations,
// check-outs) first takes a slot from one shared [Budget].
//
// The budget enforces a set of sliding windows ("at most Limit requests in any
// Period"), each scaled down by a safety share, by remembering the exact send
// times of the requests still inside each window. Unlike a token bucket with a
// burst, a sliding window can never exceed a fixed server-side window,
// whatever the alignment of the server's periods.
//
// Callers that cannot be served at once queue, and are served strictly by
// [Priority] (pings first, then spawns, kills and everything else) and, within
// one priority, first come first served. Server feedback ([Observation]: a 429
// with Retry-After, or X-RateLimit-Remaining reaching zero) pauses every caller
// until the server's window resets.
//
// The package uses only the time package's timers, so it runs on the fake
// clock of testing/synctest.
package budget
