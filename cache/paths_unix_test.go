//go:build unix

package cache

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/keygen-agent/keygen-agent/internal/paths"
)

// plantPIDLink makes dir/agent.db.pid a symbolic link to a victim file and
// returns the victim's path and content.
func plantPIDLink(t *testing.T, dir string) (string, string) {
	t.Helper()
	victim := filepath.Join(t.TempDir(), "victim")
	const content = "precious\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "agent.db"+pidSuffix)); err != nil {
		t.Fatal(err)
	}
	return victim, content
}

func checkVictim(t *testing.T, victim, content string) {
	t.Helper()
	if b, err := os.ReadFile(victim); err != nil || string(b) != content {
		t.Fatalf("victim file now %q (%v), want %q: the agent wrote through the link", b, err, content)
	}
}

// TestOpenRefusesWritableDir is issue 15 item 5's attack: a 0777 data
// directory where another user planted agent.db.pid -> /some/file made the
// agent overwrite that file. Open refuses the directory and touches nothing.
func TestOpenRefusesWritableDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	victim, content := plantPIDLink(t, dir)
	s, err := Open(filepath.Join(dir, "agent.db"), Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open used a world-writable directory")
	}
	if !errors.Is(err, paths.ErrUnsafe) || !strings.Contains(err.Error(), "chmod go-w") {
		t.Fatalf("err = %v, want paths.ErrUnsafe with a fix", err)
	}
	checkVictim(t, victim, content)
	if _, err := os.Lstat(filepath.Join(dir, "agent.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the cache file was created: %v", err)
	}
}

func TestOpenRefusesOtherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown to another user")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(dir, "agent.db"), Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open used a directory owned by another user")
	}
	if !errors.Is(err, paths.ErrUnsafe) || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("err = %v, want paths.ErrUnsafe naming the owner", err)
	}
}

// TestPIDFileNotFollowed: even in a good directory, a link left at the pid
// file's name is replaced, never written through.
func TestPIDFileNotFollowed(t *testing.T) {
	dir := t.TempDir()
	victim, content := plantPIDLink(t, dir)
	s := openT(t, filepath.Join(dir, "agent.db"))
	checkVictim(t, victim, content)
	fi, err := os.Lstat(filepath.Join(dir, "agent.db"+pidSuffix))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pid file %v (%v), want a regular 0600 file", fi, err)
	}
	if got := readPID(filepath.Join(dir, "agent.db")); got != os.Getpid() {
		t.Fatalf("pid file holds %d, want %d", got, os.Getpid())
	}
	s.Close()
	checkVictim(t, victim, content)
}

// TestDBLinkNotFollowed: the cache file itself is opened with O_NOFOLLOW;
// a link at its name (here to another, valid cache) is refused, not used.
func TestDBLinkNotFollowed(t *testing.T) {
	victim := filepath.Join(t.TempDir(), "other.db")
	openT(t, victim).Close()
	before, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(victim, filepath.Join(dir, "agent.db")); err != nil {
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(dir, "agent.db"), Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open used the cache through a symbolic link")
	}
	if !errors.Is(err, syscall.ELOOP) {
		t.Fatalf("err = %v, want ELOOP", err)
	}
	if after, _ := os.ReadFile(victim); !bytes.Equal(before, after) {
		t.Fatal("the linked file changed")
	}
}
