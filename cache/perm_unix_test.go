//go:build unix

package cache

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestPermissions(t *testing.T) {
	// The temporary directory is made before the umask is cleared: t.TempDir
	// creates it 0777 less the umask, and Open refuses a directory on its
	// path that others can write.
	path := filepath.Join(t.TempDir(), "a", "b", "agent.db")
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	openT(t, path)
	for p, want := range map[string]os.FileMode{
		filepath.Dir(path): 0o700 | os.ModeDir,
		path:               0o600,
		path + pidSuffix:   0o600,
	} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, st.Mode(), want)
		}
	}
}

func TestPermissionsTightenedOnExistingFile(t *testing.T) {
	path := dbPath(t)
	s := openT(t, path)
	s.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	openT(t, path)
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode())
	}
}
