// Package cache owns the agent's on-disk state: a single bbolt file
// (agent.db) in the agent's data directory holding the machine record, the
// raw signed certificates exactly as received, the last validation result,
// leases, the outbox of pending Keygen calls, the trusted-time watermark and
// small metadata blobs.
//
// The cache stores bytes; it never verifies or interprets certificates. The
// agent re-verifies every certificate it reads.
//
// # Layout (schema version 3)
//
// Values are JSON-encoded records unless stated otherwise. Times are RFC 3339
// strings with nanoseconds, in UTC.
//
//	/ (root)
//	├── schema/
//	│   └── version         uint64, 8 bytes big-endian (currently 3)
//	├── machine/
//	│   └── record          MachineRecord
//	├── certs/
//	│   ├── machine         CertRecord (Raw = certificate bytes as received)
//	│   └── license         CertRecord
//	├── validation/
//	│   └── last            ValidationRecord
//	├── leases/
//	│   └── <lease id>      LeaseRecord
//	├── outbox/             (bucket sequence = last allocated Seq)
//	│   └── <seq>           OutboxEntry; key is the uint64 Seq, 8 bytes big-endian
//	├── clock/
//	│   ├── watermark       time.Time (monotonic maximum)
//	│   └── last_sync       time.Time
//	└── meta/
//	    └── <key>           raw bytes (Store.PutMeta)
//
// # Migrations
//
// The schema version lives in schema/version. Older files are upgraded at
// Open by the ordered migrations slice, all steps in one transaction:
//
//   - v1 (first release) kept everything small in one bucket:
//     meta/schema_version (uint64 BE), meta/watermark and meta/last_sync (JSON
//     time) next to the user's Meta keys, which therefore could collide with
//     them. There was no outbox.
//   - v1→v2 moves the version to schema/version and the two times to the
//     clock/ bucket, leaving meta/ to user keys only.
//   - v2→v3 adds the outbox/ bucket.
//
// A new optional record field (for example LeaseRecord.IntervalSeconds)
// is not a schema change: records without it decode with the zero value,
// which readers handle, and older builds ignore it.
//
// A file with a schema newer than this build is refused with ErrSchemaTooNew
// (a downgrade); it is not quarantined.
//
// # Locking
//
// Open takes bbolt's exclusive file lock with a timeout (default 1 s). A second
// opener, in this process or another, gets an error matching ErrLocked:
// "another keygen-agent holds <path> (pid N)". The pid comes from the sidecar
// file <path>.pid, written after the lock is taken and removed by Close.
//
// # Paths
//
// Open refuses (paths.ErrUnsafe) a directory that another user owns or that
// its group or others can write, or that is reached through one (see
// paths.SecureDir). The cache file is opened with O_NOFOLLOW; the pid file and
// the quarantine marker are replaced by new files created with
// O_EXCL|O_NOFOLLOW, so a symbolic link at their names is never written
// through.
//
// # Corruption
//
// bbolt trusts its file: some damage makes it panic (a truncated file panics
// inside bolt.Open, and with NoFreelistSync the freelist rebuild walks every
// page in a goroutine where a panic cannot be recovered), a 0-byte file opens
// as a new database, and a later read of a damaged page can panic or fault.
// Open therefore:
//
//  1. opens an existing file read-only first and walks every bucket, key and
//     value on the calling goroutine with recover and debug.SetPanicOnFault,
//     then runs tx.Check, so damage surfaces where it can be caught;
//  2. opens it read-write (recover again) and checks the schema version;
//  3. on any panic, ErrInvalid, ErrChecksum, ErrVersionMismatch, failed check,
//     garbage or missing schema: renames the file to
//     "<path>.corrupt-<UTC timestamp>" (never deletes it), opens a fresh
//     store and reports it through Store.Recovered. A 0-byte file gets an
//     empty quarantine file as the record of the loss.
//
// The file handle bbolt leaks when it panics inside Open is captured through
// bolt.Options.OpenFile and closed, which releases its lock. The memory
// mapping may still leak. On Unix the rename works regardless; on Windows an
// open handle or mapping can make the rename fail. Then Open writes the marker
// file <path>.quarantine and returns an error matching ErrCorrupt: the agent
// exits, the service manager restarts it, and the next Open moves the file
// aside before bbolt ever touches it.
//
// After Open, every transaction runs under recover with SetPanicOnFault, so a
// damaged page read later returns ErrCorrupt instead of crashing, and a record
// that does not decode returns a *RecordError (matching ErrCorrupt) naming the
// bucket and key. Closing and re-opening the store then quarantines the file.
//
// A fault inside bbolt (a file truncated or overwritten while open makes the
// mapped pages fault) may leave bbolt's locks held, so the first one makes
// the store unusable: every later call, Close included, fails at once with
// ErrCorrupt without entering bbolt, and Options.OnFault is called once. The
// agent then logs and exits non-zero; the service manager restarts it and
// Open quarantines the file. Nothing ever waits on the poisoned lock.
//
// A store created empty this open, including after a quarantine, reports
// Fresh: the agent must not grant offline trust from it until one successful
// online validation, or deleting agent.db would reset the licence.
package cache
