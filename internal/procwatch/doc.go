// Package procwatch is the daemon's view of local processes: [StartTime]
// pins a PID to one process (so a recycled PID is told apart), [Alive]
// checks it, and [WatchExit] reports its exit without polling where the
// OS allows (a pidfd on Linux, kqueue EVFILT_PROC on macOS, a process
// handle on Windows). The agent uses them to release a lease when the app
// holding it dies; package ipc uses StartTime to pin a peer.
//
// It lives outside ipc so that the package apps import carries the
// transport and the protocol only. On other unix systems StartTime is
// unavailable (0 and an error), Alive uses kill(pid, 0) and WatchExit
// polls.
package procwatch
