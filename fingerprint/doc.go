// Package fingerprint owns the identity of this machine as Keygen sees it:
// the machine fingerprint, the hardware component fingerprints sent with an
// activation, the machine attributes (platform, hostname, cores, memory), and
// the local comparison that explains a component mismatch before the server
// is asked.
//
// # Privacy
//
// No raw identifier ever leaves this package. The machine fingerprint is
// hex(HMAC-SHA256(key = raw machine ID, message = app ID)), byte-identical to
// machineid.ProtectedID, so two vendors on one machine see unrelated values.
// Each component fingerprint is hex(HMAC-SHA256(key = app ID, message =
// kind + ":" + normalised raw value)). [Component.Source] says where a value
// was read (a path, an API name) and never contains the value itself.
//
// # Identity sources
//
// An explicit identity wins over the OS machine ID: first the environment
// variable named by [Options.IdentityEnv] (default KEYGEN_AGENT_MACHINE_ID),
// then [Options.IdentityFile]. Both are meant for containers, which usually
// have no machine ID of their own or share one per image. Otherwise the OS
// machine ID (github.com/denisbrodbeck/machineid) is used after validation:
// it must be at least 32 hex digits once trimmed and stripped of dashes, not
// all zeros and not a known image-baked ID. When nothing valid is found,
// [Compute] fails with [ErrNoMachineID]; it never falls back to something
// random, to boot IDs or to cgroup names.
//
// # Components
//
// Collected per OS (collect_linux.go, collect_darwin.go, collect_windows.go):
// system UUID, baseboard serial, CPU identity, serials of physical disks and
// permanent MACs of physical NICs. Unreadable or absent sources are recorded
// in [Result.Skipped] with a reason. On Linux every file is read under
// [Options.Root], which is how the tests run on fake roots in testdata/.
// Components are most complete when computed by the daemon running as root
// or SYSTEM: DMI serials are root-only on Linux.
package fingerprint
