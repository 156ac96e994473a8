//go:build unix

package paths

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// OpenFlagNoFollow makes os.OpenFile fail on a symbolic link instead of
// following it. Files the agent creates in its directories are opened with
// it.
const OpenFlagNoFollow = syscall.O_NOFOLLOW

// maxLinks bounds the symbolic links followed while resolving a directory
// (Linux's own limit is 40).
const maxLinks = 40

// SecureDir checks that dir, a directory the agent writes, can be changed
// by no one but the agent's user and root, before the agent creates,
// replaces or removes anything in it:
//
//   - every existing component from / down to dir, and every symbolic link
//     followed on the way, is owned by root or the agent's effective uid;
//   - no ancestor is writable by others unless it has the sticky bit (/tmp);
//     a group-writable ancestor is accepted (macOS' /var/run is root:daemon
//     0775), the group being the system's choice;
//   - dir itself is a directory and writable by neither its group nor others
//     (the socket directory's 0750 with socket_group, as package ipc sets
//     it, passes).
//
// A missing dir is fine when its existing ancestors pass: only trusted users
// can create it there. A missing directory whose parent is a shared sticky
// directory such as /tmp (the per-user fallback /tmp/keygen-agent-<uid>) is
// created now, exclusively with mode 0700, and then checked with lstat to be
// a directory, not a link, owned by the agent's uid: a name another user
// claimed first is refused, never used.
//
// Errors match [ErrUnsafe] and say which path is wrong and how.
func SecureDir(dir string) error {
	if dir == "" {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	uid := os.Geteuid()
	real, fi, missing, err := resolve(dir, abs, uid)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return checkTarget(dir, real, fi)
	}
	// Claim missing directories under a shared sticky parent; below a
	// trusted one, whoever creates them later (MkdirAll) is trusted.
	for _, name := range missing {
		if !shared(fi) {
			return nil
		}
		next := filepath.Join(real, name)
		if err := os.Mkdir(next, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", next, err)
		}
		nfi, err := os.Lstat(next)
		if err != nil {
			return fmt.Errorf("%s: %w", next, err)
		}
		if nfi.Mode()&fs.ModeSymlink != 0 || !nfi.IsDir() {
			return &UnsafeError{Dir: dir, Path: next, Reason: "is not a directory but " + kind(nfi) + " in a shared directory (another user may have created it): remove it"}
		}
		if o := owner(nfi); o != uid {
			return &UnsafeError{Dir: dir, Path: next, Reason: fmt.Sprintf("is owned by uid %d, not by the agent's uid %d, in a shared directory (another user may have created it): remove it", o, uid)}
		}
		if nfi.Mode().Perm()&0o022 != 0 {
			return &UnsafeError{Dir: dir, Path: next, Reason: fmt.Sprintf("has mode %v: writable by group or others; run chmod 0700 %s", nfi.Mode().Perm(), next)}
		}
		real, fi = next, nfi
	}
	return nil
}

// resolve walks abs from /, following symbolic links, checking each
// component as an ancestor. It returns the deepest existing directory (real,
// with its lstat info) and the names still missing below it.
func resolve(dir, abs string, uid int) (string, fs.FileInfo, []string, error) {
	real := "/"
	fi, err := os.Lstat(real)
	if err != nil {
		return "", nil, nil, err
	}
	if err := checkAncestor(dir, real, fi, uid, true); err != nil {
		return "", nil, nil, err
	}
	comps := split(abs)
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case ".":
			continue
		case "..":
			real = filepath.Dir(real)
			if fi, err = os.Lstat(real); err != nil {
				return "", nil, nil, err
			}
			continue
		}
		next := filepath.Join(real, c)
		nfi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			return real, fi, append([]string{c}, comps...), nil
		}
		if err != nil {
			return "", nil, nil, fmt.Errorf("%s: %w", next, err)
		}
		if nfi.Mode()&fs.ModeSymlink != 0 {
			if o := owner(nfi); o != 0 && o != uid {
				return "", nil, nil, &UnsafeError{Dir: dir, Path: next, Reason: fmt.Sprintf("is a symbolic link owned by uid %d (only root or the agent's uid %d may own the links on its way)", o, uid)}
			}
			if links++; links > maxLinks {
				return "", nil, nil, fmt.Errorf("%s: too many levels of symbolic links", dir)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return "", nil, nil, fmt.Errorf("%s: %w", next, err)
			}
			if filepath.IsAbs(target) {
				real = "/"
				if fi, err = os.Lstat(real); err != nil {
					return "", nil, nil, err
				}
			}
			comps = append(split(target), comps...)
			continue
		}
		// The last component's mode is checkTarget's, stricter, rule.
		if err := checkAncestor(dir, next, nfi, uid, len(comps) > 0); err != nil {
			return "", nil, nil, err
		}
		real, fi = next, nfi
	}
	return real, fi, nil, nil
}

func checkAncestor(dir, p string, fi fs.FileInfo, uid int, mode bool) error {
	if o := owner(fi); o != 0 && o != uid {
		return &UnsafeError{Dir: dir, Path: p, Reason: fmt.Sprintf("is owned by uid %d; the agent (uid %d) only uses directories owned by root or itself: chown it", o, uid)}
	}
	if !fi.IsDir() {
		return &UnsafeError{Dir: dir, Path: p, Reason: "is not a directory but " + kind(fi)}
	}
	if mode && fi.Mode().Perm()&0o002 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return &UnsafeError{Dir: dir, Path: p, Reason: fmt.Sprintf("has mode %v: writable by others without the sticky bit; run chmod o-w %s", fi.Mode().Perm(), p)}
	}
	return nil
}

func checkTarget(dir, p string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return &UnsafeError{Dir: dir, Path: p, Reason: fmt.Sprintf("has mode %v: writable by group or others, who could plant links or files the agent then writes through; run chmod go-w %s", perm, p)}
	}
	return nil
}

// shared reports a sticky directory writable by others, such as /tmp.
func shared(fi fs.FileInfo) bool {
	return fi.Mode()&fs.ModeSticky != 0 && fi.Mode().Perm()&0o002 != 0
}

func owner(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

func kind(fi fs.FileInfo) string {
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsRegular():
		return "a regular file"
	default:
		return "a " + m.Type().String() + " file"
	}
}

func split(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}
