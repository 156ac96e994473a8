// Package logfile is a size-bounded log file: a [Writer] that renames the
// file aside when it would grow past a limit and keeps a few old files,
// and [Trim], which bounds a file that a service manager redirected stderr
// to (launchd's StandardErrorPath) when the agent starts.
package logfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"sync"
)

// Defaults for [Options].
const (
	DefaultMaxBytes = 10 << 20
	DefaultKeep     = 3
	DefaultMode     = 0o640
)

// ErrUnsafe is matched (errors.Is) when a log path is not a regular file
// (a symlink, a directory, a device) or belongs to another user.
var ErrUnsafe = errors.New("unsafe log file")

// Options bound a [Writer].
type Options struct {
	// MaxBytes is the size at which the file is rotated: a write that
	// would take it past MaxBytes goes to a new file. A single write larger
	// than MaxBytes is written whole to a new file. Default 10 MiB.
	MaxBytes int64
	// Keep is how many old files are kept: path.1 (the newest) to
	// path.Keep. Default 3; negative keeps none (the file is truncated).
	Keep int
	// Mode is the permission of the files (default 0640); an existing file
	// with another mode is set to it.
	Mode fs.FileMode
	// Fallback receives what cannot be written to the file (it could not be
	// reopened after a rotation) and a note about a failed rotation; nil
	// discards them.
	Fallback io.Writer
}

// Writer is a size-bounded log file, safe for concurrent use. At most
// (Keep+1) × MaxBytes (plus one oversized write) are on disk.
type Writer struct {
	path string
	o    Options

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Open opens (creating it if missing) the log file at path for appending.
// It refuses a path that is not a regular file or, on unix, is owned by
// another user.
func Open(path string, o Options) (*Writer, error) {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Keep == 0 {
		o.Keep = DefaultKeep
	}
	if o.Mode == 0 {
		o.Mode = DefaultMode
	}
	if o.Fallback == nil {
		o.Fallback = io.Discard
	}
	w := &Writer{path: path, o: o}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

// open opens w.path for appending: never through a symlink, only a regular
// file of ours, with the mode set to o.Mode.
func (w *Writer) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|noFollow, w.o.Mode)
	if err != nil {
		if isSymlinkErr(err) {
			return fmt.Errorf("%w: %s is a symbolic link", ErrUnsafe, w.path)
		}
		return fmt.Errorf("open log file: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = checkFile(w.path, fi)
	}
	if err == nil && fi.Mode().Perm() != w.o.Mode.Perm() {
		err = f.Chmod(w.o.Mode)
	}
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// checkFile refuses anything but a regular file owned by us.
func checkFile(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file (%s)", ErrUnsafe, path, fi.Mode().Type())
	}
	return checkOwner(path, fi)
}

// Write appends p, rotating first when p would take the file past
// MaxBytes. When the file cannot be reopened, p goes to Fallback.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != nil && w.size > 0 && w.size+int64(len(p)) > w.o.MaxBytes {
		w.rotate()
	}
	if w.f == nil {
		if err := w.open(); err != nil {
			return w.o.Fallback.Write(p)
		}
	}
	n, err := w.f.Write(p)
	w.size += int64(n)
	return n, err
}

// rotate renames path.i to path.i+1 (dropping path.Keep) and path to
// path.1, leaving w.f nil for Write to open a fresh file. If renaming
// fails the file is truncated instead, so the bound holds either way.
func (w *Writer) rotate() {
	if w.o.Keep < 0 {
		w.truncate(nil)
		return
	}
	w.f.Close()
	w.f = nil
	for i := w.o.Keep - 1; i >= 1; i-- {
		err := os.Rename(w.old(i), w.old(i+1))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(w.o.Fallback, "keygen-agent: rotate log %s: %v\n", w.old(i), err)
		}
	}
	if err := os.Rename(w.path, w.old(1)); err != nil {
		if w.open() == nil {
			w.truncate(err)
		}
	}
}

// truncate empties the open file (writes append, so they start at 0).
func (w *Writer) truncate(cause error) {
	if cause != nil {
		fmt.Fprintf(w.o.Fallback, "keygen-agent: rotate log %s: %v; truncated instead\n", w.path, cause)
	}
	if err := w.f.Truncate(0); err != nil {
		fmt.Fprintf(w.o.Fallback, "keygen-agent: truncate log %s: %v\n", w.path, err)
		return
	}
	w.size = 0
}

func (w *Writer) old(i int) string { return w.path + "." + strconv.Itoa(i) }

// Close closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// Trim bounds a file that f (typically os.Stderr) was redirected to by a
// service manager, at start: when path names the same file as f and it is
// larger than max, its last max bytes are saved as path.1 (replacing an
// older one, with the same mode) and f is emptied and rewound. It reports
// whether it trimmed. A path that is not f's file is left alone.
func Trim(f *os.File, path string, max int64) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat stderr: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() <= max {
		return false, nil
	}
	pi, err := os.Lstat(path)
	if err != nil || !os.SameFile(fi, pi) {
		return false, nil
	}
	if err := checkFile(path, pi); err != nil {
		return false, err
	}
	if err := saveTail(path, fi, max); err != nil {
		return false, err
	}
	if err := f.Truncate(0); err != nil {
		return false, fmt.Errorf("truncate %s: %w", path, err)
	}
	// Without O_APPEND the next write would land at the old offset.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return true, fmt.Errorf("rewind %s: %w", path, err)
	}
	return true, nil
}

// saveTail writes the last max bytes of path (the file fi, which stderr
// holds write-only) to path.1, through a new file renamed into place.
func saveTail(path string, fi fs.FileInfo, max int64) error {
	in, err := os.OpenFile(path, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return fmt.Errorf("save old stderr: %w", err)
	}
	defer in.Close()
	if ii, err := in.Stat(); err != nil || !os.SameFile(fi, ii) {
		return fmt.Errorf("save old stderr: %s was replaced", path)
	}
	dst := path + ".1"
	tmp := dst + ".tmp"
	_ = os.Remove(tmp)
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return fmt.Errorf("save old stderr: %w", err)
	}
	_, err = io.Copy(out, io.NewSectionReader(in, fi.Size()-max, max))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save old stderr: %w", err)
	}
	return nil
}
