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
// Every request has an owner: the agent itself ("": pings, revalidations,
// replays) or the local user it serves. The agent is limited only by the
// windows; the users together may hold what it used or reserves
// ([Config.AgentReserve]) leaves of each window, and one user at most
// [Config.OwnerShare] of that, or an even split between the users active in
// the window, whichever is less. A user looping requests therefore cannot
// fill a window: the other users and the agent keep their part of it.
//
// No caller should wait on another owner's share. [Budget.WaitWithinShare]
// answers [ErrShareSpent] at once instead of queueing when the owner has
// used its share, for work that others wait behind (a lease's kill that
// holds a seat, an outbox replay that holds later entries). The agent
// queues such work and moves on. A queued kill that has to run to free a
// seat for another user's request is charged to the agent (""), not to
// the dead lease's user (agent/killcharge.go). That costs the agent at
// most one kill per spawn already charged to that user.
//
// Callers that cannot be served at once queue. Pings go first; otherwise the
// waiting owners take turns, and one owner's callers are served by
// [Priority] (spawns, then kills and everything else) and, within one
// priority, first come first served. Server feedback ([Observation]: a 429
// with Retry-After, or X-RateLimit-Remaining reaching zero) pauses every caller
// until the server's window resets.
//
// The package uses only the time package's timers, so it runs on the fake
// clock of testing/synctest.
package budget
