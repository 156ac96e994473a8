// Package heartbeat owns the agent's single scheduler for machine and process
// pings: one timer heap keyed by a comparable key of the caller's type (a
// lease, the machine) instead of a goroutine per lease, firing due keys on a
// bounded number of concurrent workers.
//
// A key fires once per [Scheduler.Set]; the work for a key ([Func]) reschedules
// it by calling Set again, typically with [NextPing], which places each ping
// well inside the server's heartbeat window with jitter. [Capacity] tells how
// many keys a request rate can keep alive at a given interval.
package heartbeat
