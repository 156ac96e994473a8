//go:build unix

package paths

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobody is the uid tests give "another user" (chown needs root).
const nobody = 65534

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown to another user")
	}
}

func mkdir(t *testing.T, p string, mode os.FileMode) string {
	t.Helper()
	if err := os.Mkdir(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

func wantUnsafe(t *testing.T, err error, path string) {
	t.Helper()
	var ue *UnsafeError
	if !errors.Is(err, ErrUnsafe) || !errors.As(err, &ue) {
		t.Fatalf("err = %v, want an UnsafeError", err)
	}
	if ue.Path != path {
		t.Fatalf("offending path %q, want %q (%v)", ue.Path, path, err)
	}
}

func TestSecureDirAccepts(t *testing.T) {
	base := t.TempDir()
	for _, tc := range []struct {
		name string
		mode os.FileMode
	}{{"private", 0o700}, {"socket dir as ipc sets it", 0o750}, {"world-readable", 0o755}} {
		d := mkdir(t, filepath.Join(base, strings.ReplaceAll(tc.name, " ", "-")), tc.mode)
		if err := SecureDir(d); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// Missing below a trusted parent: accepted, left for its owner to create.
	missing := filepath.Join(base, "later", "data")
	if err := SecureDir(missing); err != nil {
		t.Errorf("missing: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(base, "later")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a directory under a trusted parent was created: %v", err)
	}
	// A link made by root or the agent's user is followed.
	if err := os.Symlink(filepath.Join(base, "private"), filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	if err := SecureDir(filepath.Join(base, "link")); err != nil {
		t.Errorf("own link: %v", err)
	}
	if err := SecureDir(filepath.Join(base, "link", "..", "private")); err != nil {
		t.Errorf("own link and ..: %v", err)
	}
}

// TestSecureDirWritableByOthers is issue 15's first path attack: a 0777
// data directory in which another user planted agent.db.pid -> /some/file.
func TestSecureDirWritableByOthers(t *testing.T) {
	base := t.TempDir()
	for _, mode := range []os.FileMode{0o777, 0o770, os.ModeSticky | 0o777, 0o702} {
		d := mkdir(t, filepath.Join(base, fmt.Sprintf("m%o", uint32(mode))), mode)
		wantUnsafe(t, SecureDir(d), d)
	}
	// An ancestor writable by others (no sticky bit) lets them swap the
	// directory itself.
	open := mkdir(t, filepath.Join(base, "open"), 0o777)
	inner := mkdir(t, filepath.Join(open, "data"), 0o700)
	wantUnsafe(t, SecureDir(inner), open)
	wantUnsafe(t, SecureDir(filepath.Join(open, "missing")), open)
}

func TestSecureDirOtherOwner(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	theirs := mkdir(t, filepath.Join(base, "theirs"), 0o700)
	if err := os.Chown(theirs, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	// Issue 15's second path attack: the socket directory owned by
	// another user, who could replace the socket.
	wantUnsafe(t, SecureDir(theirs), theirs)
	if err := SecureDir(theirs); !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("message %q does not name the owner", err)
	}
	// Below it, existing or not.
	mine := mkdir(t, filepath.Join(theirs, "sock"), 0o700)
	wantUnsafe(t, SecureDir(mine), theirs)
	wantUnsafe(t, SecureDir(filepath.Join(theirs, "missing", "x")), theirs)
	// A link to it, and a link owned by another user even to a good place.
	link := filepath.Join(base, "to-theirs")
	if err := os.Symlink(theirs, link); err != nil {
		t.Fatal(err)
	}
	wantUnsafe(t, SecureDir(link), theirs)
	good := mkdir(t, filepath.Join(base, "good"), 0o700)
	theirLink := filepath.Join(base, "their-link")
	if err := os.Symlink(good, theirLink); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(theirLink, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	wantUnsafe(t, SecureDir(theirLink), theirLink)
}

// TestSecureDirSharedParent: the per-user fallback /tmp/keygen-agent-<uid>
// is claimed exclusively with mode 0700; a name another user took first is
// refused.
func TestSecureDirSharedParent(t *testing.T) {
	tmp := mkdir(t, filepath.Join(t.TempDir(), "tmp"), os.ModeSticky|0o777)
	d := filepath.Join(tmp, "keygen-agent-1000")
	if err := SecureDir(d); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(d)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 || int(fi.Sys().(*syscall.Stat_t).Uid) != os.Geteuid() {
		t.Fatalf("claimed %v owned by %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
	}
	if err := SecureDir(d); err != nil { // and reused on the next start
		t.Fatal(err)
	}
	// A file squatting the name.
	f := filepath.Join(tmp, "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wantUnsafe(t, SecureDir(f), f)

	if os.Geteuid() != 0 {
		return
	}
	taken := mkdir(t, filepath.Join(tmp, "taken"), 0o700)
	if err := os.Chown(taken, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	wantUnsafe(t, SecureDir(taken), taken)
	// A link another user planted under the name, to a directory of ours.
	planted := filepath.Join(tmp, "planted")
	if err := os.Symlink(d, planted); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(planted, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	wantUnsafe(t, SecureDir(planted), planted)
}
