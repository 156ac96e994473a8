package agent

import (
	"os"

	"golang.org/x/sys/unix"
)

// testTempRoot is where the harness puts an agent's data directory: tmpfs
// when the machine has one. bbolt syncs every commit (fdatasync), and the
// agent commits trusted time once a minute of (fake) time; on a disk those
// syncs were most of the model test's wall time (40 sequences: ~70% of it
// waiting in fdatasync). On tmpfs a sync costs nothing and the writes,
// reads and reopenings stay the same.
func testTempRoot() string {
	const shm = "/dev/shm"
	var st unix.Statfs_t
	if unix.Statfs(shm, &st) == nil && st.Type == unix.TMPFS_MAGIC && unix.Access(shm, unix.W_OK) == nil {
		return shm
	}
	return os.TempDir()
}
