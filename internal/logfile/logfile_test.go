package logfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.log")
	w, err := Open(p, Options{MaxBytes: 20, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	line := func(c byte) []byte { return append(bytes.Repeat([]byte{c}, 9), '\n') } // 10 bytes
	for _, c := range []byte("abcdefg") {
		if n, err := w.Write(line(c)); n != 10 || err != nil {
			t.Fatalf("write %c: %d %v", c, n, err)
		}
	}
	// 7 lines of 10 bytes, 20 bytes a file: ab | cd | ef | g; two old
	// files kept, so "ab" is gone.
	want := map[string]string{"agent.log": "ggggggggg\n", "agent.log.1": "eeeeeeeee\nfffffffff\n", "agent.log.2": "ccccccccc\nddddddddd\n"}
	for name, content := range want {
		if got := readFile(t, filepath.Join(dir, name)); got != content {
			t.Errorf("%s = %q, want %q", name, got, content)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "agent.log.3")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("agent.log.3 kept: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("%d files in the log directory, want 3", len(entries))
	}
}

func TestReopenAppendsAndCountsExistingSize(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.log")
	if err := os.WriteFile(p, []byte(strings.Repeat("x", 15)), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(p, Options{MaxBytes: 20, Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("0123456789")) // 15 + 10 > 20: rotates first
	if got := readFile(t, p); got != "0123456789" {
		t.Errorf("log = %q", got)
	}
	if got := readFile(t, p+".1"); got != strings.Repeat("x", 15) {
		t.Errorf("log.1 = %q", got)
	}
	// An oversized write still lands whole, in a file of its own.
	big := strings.Repeat("y", 50)
	w.Write([]byte(big))
	if got := readFile(t, p); got != big {
		t.Errorf("oversized write: log = %q", got)
	}
}

func TestKeepNoneTruncates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.log")
	w, err := Open(p, Options{MaxBytes: 10, Keep: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("12345678\n"))
	w.Write([]byte("abcdefgh\n"))
	if got := readFile(t, p); got != "abcdefgh\n" {
		t.Errorf("log = %q", got)
	}
	if _, err := os.Stat(p + ".1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Keep<0 left an old file: %v", err)
	}
}

func TestPermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix permission bits")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.log")
	// launchd created the file 0644 (Umask 23): Open narrows it.
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := Open(p, Options{MaxBytes: 10, Keep: 1, Mode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("0123456789"))
	w.Write([]byte("0123456789")) // rotated: a new file
	for _, f := range []string{p, p + ".1"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	// The default mode is 0640, whatever the umask.
	q := filepath.Join(dir, "other.log")
	w2, err := Open(q, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w2.Close()
	if fi, _ := os.Stat(q); fi.Mode().Perm() != 0o640 {
		t.Errorf("default mode %v", fi.Mode().Perm())
	}
}

func TestRefusesUnsafePaths(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on Windows")
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("secret"), 0o600)
	link := filepath.Join(dir, "agent.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(link, Options{}); !errors.Is(err, ErrUnsafe) {
		t.Errorf("symlink: %v, want ErrUnsafe", err)
	}
	if _, err := Open(dir, Options{}); err == nil {
		t.Error("a directory was opened as a log")
	}
	if got := readFile(t, target); got != "secret" {
		t.Errorf("target changed: %q", got)
	}
	// A symlink planted at a rotated name is replaced, not followed.
	p := filepath.Join(dir, "real.log")
	os.Symlink(target, p+".1")
	w, err := Open(p, Options{MaxBytes: 5, Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("12345"))
	w.Write([]byte("67890"))
	if got := readFile(t, target); got != "secret" {
		t.Errorf("target changed through a rotated name: %q", got)
	}
	if fi, err := os.Lstat(p + ".1"); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("log.1: %v %v", fi, err)
	}
}

func TestFallbackWhenReopenFails(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses a directory at the log's name")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.log")
	var fb bytes.Buffer
	w, err := Open(p, Options{MaxBytes: 5, Keep: 1, Fallback: &fb})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("12345"))
	// Something takes the log's name between rotations: the next write
	// rotates it away but cannot create the file again.
	w.mu.Lock()
	w.f.Close()
	w.f = nil
	w.mu.Unlock()
	os.Remove(p)
	os.Mkdir(p, 0o700)
	if n, err := w.Write([]byte("lost\n")); n != 5 || err != nil {
		t.Fatalf("fallback write: %d %v", n, err)
	}
	if !strings.Contains(fb.String(), "lost") {
		t.Errorf("fallback got %q", fb.String())
	}
}

func TestConcurrentWritesStayBounded(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.log")
	w, err := Open(p, Options{MaxBytes: 1000, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				w.Write([]byte("a line of forty bytes, more or less ...\n"))
			}
		}()
	}
	wg.Wait()
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("%d files, want 3", len(entries))
	}
	for _, e := range entries {
		fi, _ := e.Info()
		if fi.Size() > 1000 {
			t.Errorf("%s is %d bytes, max 1000", e.Name(), fi.Size())
		}
	}
}

func TestTrim(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.stderr.log")
	// As launchd opens StandardErrorPath: no O_APPEND assumed.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString(strings.Repeat("old crash output\n", 100)) // 1700 bytes
	f.WriteString("the last line\n")

	if trimmed, err := Trim(f, filepath.Join(dir, "other"), 100); trimmed || err != nil {
		t.Fatalf("a path that is not f's file: %v %v", trimmed, err)
	}
	if trimmed, err := Trim(f, p, 1<<20); trimmed || err != nil {
		t.Fatalf("under the bound: %v %v", trimmed, err)
	}
	trimmed, err := Trim(f, p, 100)
	if !trimmed || err != nil {
		t.Fatalf("over the bound: %v %v", trimmed, err)
	}
	old := readFile(t, p+".1")
	if len(old) != 100 || !strings.HasSuffix(old, "the last line\n") {
		t.Errorf("saved tail %d bytes: %q", len(old), old)
	}
	f.WriteString("new start\n")
	if got := readFile(t, p); got != "new start\n" {
		t.Errorf("after trim: %q", got)
	}
}
