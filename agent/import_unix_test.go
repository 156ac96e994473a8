//go:build unix

package agent

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A FIFO, a symlink to a device and a huge file in the import folder must
// neither hang the start (nor the stop) nor make the agent read them.
func TestImportFolderHostileFiles(t *testing.T) {
	e := realEnv(t, envOptions{})
	e.noWatch = false
	dir := filepath.Join(e.dir, "import")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.lic"), 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero.lic")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "huge.lic"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxImportSize + 1); err != nil { // sparse
		t.Fatal(err)
	}
	f.Close()

	started := make(chan struct{})
	go func() {
		e.startReal()
		close(started)
	}()
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not finish starting with a FIFO in the import folder")
	}
	e.waitFor("hostile files rejected", func() bool {
		r, _ := filepath.Glob(filepath.Join(dir, "rejected", "*.reason"))
		return len(r) == 3
	})
	stopped := make(chan struct{})
	go func() {
		e.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop")
	}
	logs := e.logs.String()
	for _, want := range []string{"fifo.lic is not a regular file", "zero.lic is a symlink", "huge.lic is 16777217 bytes"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
}
