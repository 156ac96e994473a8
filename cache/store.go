package cache

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/keygen-agent/keygen-agent/internal/paths"
)

// DefaultLockTimeout is how long Open waits for another holder of the file
// lock before it returns ErrLocked.
const DefaultLockTimeout = time.Second

// Options configure Open. The zero value is usable.
type Options struct {
	LockTimeout time.Duration    // default DefaultLockTimeout
	Logger      *slog.Logger     // default: discard
	Now         func() time.Time // default time.Now; used for quarantine names and default timestamps
	// OnFault, if set, is called once when a transaction faults on a file
	// damaged while open (truncated under the agent, say). From then on
	// every call fails with ErrCorrupt without touching the file: bbolt's
	// locks may be left held, so the only way back is a new process, whose
	// Open quarantines the file. The agent exits non-zero here.
	OnFault func(error)
}

var (
	// ErrLocked matches the error returned when another keygen-agent (or
	// another Open in this process) holds the database file. The concrete
	// error is a *LockedError.
	ErrLocked = errors.New("cache: database is locked by another keygen-agent")
	// ErrCorrupt matches errors caused by a damaged database file or an
	// undecodable record.
	ErrCorrupt = errors.New("cache: corrupt database")
	// ErrSchemaTooNew is returned by Open when the file was written by a newer
	// agent (a downgrade). The file is left untouched.
	ErrSchemaTooNew = errors.New("cache: database schema is newer than this agent")
)

// LockedError reports who holds the database. It matches ErrLocked.
type LockedError struct {
	Path string
	PID  int // 0 when unknown
}

func (e *LockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("cache: another keygen-agent holds %s (pid %d)", e.Path, e.PID)
	}
	return fmt.Sprintf("cache: another keygen-agent holds %s", e.Path)
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// RecordError reports a record that could not be decoded. It matches
// ErrCorrupt and wraps the decoding error.
type RecordError struct {
	Bucket, Key string
	Err         error
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("cache: corrupt record %s/%s: %v", e.Bucket, e.Key, e.Err)
}

// Unwrap returns ErrCorrupt and the underlying error.
func (e *RecordError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

// Recovery describes a damaged file that Open moved aside.
type Recovery struct {
	QuarantinedTo string    // where the original bytes now live
	Reason        string    // what was wrong
	At            time.Time // when it was moved
}

// Store is an open agent.db. Its methods are safe for concurrent use.
type Store struct {
	path      string
	opts      Options
	log       *slog.Logger
	db        *bolt.DB
	fresh     bool
	recovered *Recovery
	closeOnce sync.Once
	closeErr  error

	// txMu orders our calls into bbolt so that none is inside bbolt when a
	// fault poisons it: views share it, updates hold it alone. broken is
	// the fault, once one happened.
	txMu      sync.RWMutex
	broken    atomic.Pointer[error]
	faultOnce sync.Once
}

// Test hooks.
var (
	renameFile = os.Rename
	// noSync skips fsync (fuzzing: an fsync per execution is the cost).
	noSync = false
)

const (
	pidSuffix    = ".pid"
	markerSuffix = ".quarantine"
)

// Open opens or creates the store at path. The directory is created with mode
// 0700 and the file with 0600. A directory another user owns or can write is
// refused with an error matching paths.ErrUnsafe (see paths.SecureDir) before
// anything in it is read or written. See the package documentation for
// locking and corruption handling.
func Open(path string, o Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("cache: empty path")
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	path = filepath.Clean(path)
	s := &Store{path: path, opts: o, log: lg}
	if err := paths.SecureDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("cache: create directory: %w", err)
	}

	// A previous process could not move a damaged file aside (Windows with a
	// leaked handle): do it now, before bbolt reads the file.
	if reason, ok := readMarker(path); ok {
		if err := s.quarantine("pending from previous run: " + reason); err != nil {
			return nil, err
		}
		_ = os.Remove(path + markerSuffix)
	}

	for attempt := 0; ; attempt++ {
		db, fresh, reason, err := s.openOnce()
		if err != nil {
			return nil, err
		}
		if reason == "" {
			s.db, s.fresh = db, fresh
			break
		}
		if attempt > 0 {
			// A file we just created is damaged: do not loop.
			return nil, fmt.Errorf("%w: %s: fresh database unusable: %s", ErrCorrupt, path, reason)
		}
		if err := s.quarantine(reason); err != nil {
			return nil, err
		}
	}
	// Tighten a file created by an older build or by hand.
	_ = os.Chmod(path, 0o600)
	writePID(path)
	return s, nil
}

// openOnce opens path once. A non-empty reason means the file is damaged and
// must be quarantined; db is then nil.
func (s *Store) openOnce() (db *bolt.DB, fresh bool, reason string, err error) {
	var size int64 = -1
	switch st, err := os.Stat(s.path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, false, "", fmt.Errorf("cache: %w", err)
	case !st.Mode().IsRegular():
		return nil, false, "", fmt.Errorf("cache: %s is not a regular file", s.path)
	default:
		size = st.Size()
	}
	if size > 0 {
		if reason, err := s.validate(); reason != "" || err != nil {
			return nil, false, reason, err
		}
	}
	db, reason, err = s.openRW()
	if reason != "" || err != nil {
		return nil, false, reason, err
	}
	fresh, reason, err = s.prepare(db)
	if reason != "" || err != nil {
		_ = db.Close()
		return nil, false, reason, err
	}
	if fresh && size == 0 {
		// bbolt silently turned the 0-byte file into a new database. Keep a
		// record of the loss next to it; the original had no bytes to keep.
		s.recordEmpty()
	}
	return db, fresh, "", nil
}

// openFileRecorder captures the *os.File bbolt opens so it can be closed
// (releasing its lock) if bolt.Open panics and leaks it.
type openFileRecorder struct{ f *os.File }

func (r *openFileRecorder) open(name string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(name, flag|paths.OpenFlagNoFollow, perm)
	r.f = f
	return f, err
}

func (r *openFileRecorder) release() {
	if r.f != nil {
		_ = r.f.Close()
	}
}

// validate opens the file read-only and reads every page reachable from the
// root, on this goroutine, so damage panics where it can be recovered.
func (s *Store) validate() (reason string, err error) {
	rec := &openFileRecorder{}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			rec.release()
			reason, err = fmt.Sprintf("panic while validating: %v", r), nil
		}
	}()
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{
		ReadOnly: true,
		Timeout:  s.opts.LockTimeout,
		OpenFile: rec.open,
	})
	if err != nil {
		return s.classifyOpenErr(err)
	}
	defer db.Close()
	// Under the shared lock: no writer can be changing the file. bbolt has
	// read only the meta pages so far.
	switch reason, err := rawCheckFile(s.path); {
	case err != nil:
		return "", fmt.Errorf("cache: %w", err)
	case reason != "":
		return reason, nil
	}
	err = db.View(func(tx *bolt.Tx) error {
		if err := walkTx(tx); err != nil {
			return err
		}
		var errs []string
		for cerr := range tx.Check() {
			errs = append(errs, cerr.Error())
		}
		if len(errs) > 0 {
			return fmt.Errorf("consistency check: %s", strings.Join(errs, "; "))
		}
		return nil
	})
	if err != nil {
		return err.Error(), nil
	}
	return "", nil
}

// openRW opens the file for writing with bbolt's lock.
func (s *Store) openRW() (db *bolt.DB, reason string, err error) {
	rec := &openFileRecorder{}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			rec.release()
			db, reason, err = nil, fmt.Sprintf("panic while opening: %v", r), nil
		}
	}()
	db, err = bolt.Open(s.path, 0o600, &bolt.Options{
		Timeout:        s.opts.LockTimeout,
		NoFreelistSync: true,
		NoSync:         noSync,
		OpenFile:       rec.open,
	})
	if err != nil {
		reason, err = s.classifyOpenErr(err)
		return nil, reason, err
	}
	return db, "", nil
}

func (s *Store) classifyOpenErr(err error) (reason string, _ error) {
	var pe *fs.PathError
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return "", &LockedError{Path: s.path, PID: readPID(s.path)}
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch):
		return err.Error(), nil
	case errors.As(err, &pe), errors.Is(err, fs.ErrPermission), errors.Is(err, fs.ErrNotExist):
		// Cannot open the file at all: not a statement about its content.
		return "", fmt.Errorf("cache: open %s: %w", s.path, err)
	default:
		// "file size too small", "mmap too large", bad page size...: the
		// header describes something that is not there.
		return err.Error(), nil
	}
}

// quarantine renames the damaged file aside. If that fails it leaves a marker
// so the next start moves it before opening, and returns ErrCorrupt.
func (s *Store) quarantine(reason string) error {
	at := s.opts.Now().UTC()
	dst := s.quarantineName(at)
	if err := renameFile(s.path, dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		merr := writeNew(s.path+markerSuffix, []byte(reason))
		s.log.Error("cache: damaged database could not be moved aside; restart to retry",
			"path", s.path, "reason", reason, "err", err, "marker_err", merr)
		return fmt.Errorf("%w: %s is damaged (%s) and could not be moved aside (%v); "+
			"the agent must restart, the next start moves it before opening", ErrCorrupt, s.path, reason, err)
	}
	s.recovered = &Recovery{QuarantinedTo: dst, Reason: reason, At: at}
	s.log.Warn("cache: damaged database moved aside; starting with an empty cache",
		"path", s.path, "quarantined_to", dst, "reason", reason)
	return nil
}

func (s *Store) quarantineName(at time.Time) string {
	base := s.path + ".corrupt-" + at.Format("20060102T150405Z")
	name := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			return name
		}
		name = base + "-" + strconv.Itoa(i)
	}
}

func (s *Store) recordEmpty() {
	at := s.opts.Now().UTC()
	dst := s.quarantineName(at)
	if f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
		_ = f.Close()
	} else {
		dst = ""
	}
	s.recovered = &Recovery{QuarantinedTo: dst, Reason: "empty (0-byte) database file", At: at}
	s.log.Warn("cache: database file was empty; starting with an empty cache", "path", s.path, "record", dst)
}

func readMarker(path string) (string, bool) {
	b, err := readNoFollow(path + markerSuffix)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// writePID records the lock holder's pid. The lock is held, so a pid file
// left by an earlier agent is stale: it is removed (a symbolic link itself,
// never its target) and a new file is created exclusively, without following
// a link planted in between.
func writePID(path string) {
	_ = writeNew(path+pidSuffix, []byte(strconv.Itoa(os.Getpid())+"\n"))
}

// writeNew replaces name with a new 0600 file holding b: it removes what is
// there and creates the file with O_EXCL|O_NOFOLLOW, so it never writes
// through a link or into a file someone else created.
func writeNew(name string, b []byte) error {
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|paths.OpenFlagNoFollow, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readNoFollow reads a small sidecar file, refusing a symbolic link.
func readNoFollow(name string) ([]byte, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|paths.OpenFlagNoFollow, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 4096))
}

func readPID(path string) int {
	b, err := readNoFollow(path + pidSuffix)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Close releases the database and its lock. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if readPID(s.path) == os.Getpid() {
			_ = os.Remove(s.path + pidSuffix)
		}
		s.txMu.Lock()
		defer s.txMu.Unlock()
		if err := s.Fault(); err != nil {
			// bbolt's Close would wait for the lock a faulted
			// transaction left held; the process exit releases the file.
			s.closeErr = err
			return
		}
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// Fault returns the fault that made the store unusable, or nil.
func (s *Store) Fault() error {
	if p := s.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// fault records a recovered panic or memory fault inside bbolt: the store
// is unusable from now on (see Options.OnFault).
func (s *Store) fault(r any) error {
	err := fmt.Errorf("%w: %s changed or was damaged while open: %v", ErrCorrupt, s.path, r)
	s.faultOnce.Do(func() {
		s.broken.Store(&err)
		s.log.Error("cache file faulted while open; the store is unusable until the agent restarts", "path", s.path, "err", err)
		if s.opts.OnFault != nil {
			s.opts.OnFault(err)
		}
	})
	return s.Fault()
}

// Path returns the database file path.
func (s *Store) Path() string { return s.path }

// Fresh reports whether the store was created empty by this Open, including
// after a quarantine. A fresh store carries no offline trust.
func (s *Store) Fresh() bool { return s.fresh }

// Recovered returns what Open moved aside, or nil.
func (s *Store) Recovered() *Recovery { return s.recovered }

// view and update run a transaction with panics and memory faults turned
// into ErrCorrupt.
func (s *Store) view(fn func(*bolt.Tx) error) (err error) {
	s.txMu.RLock()
	defer s.txMu.RUnlock()
	if err := s.Fault(); err != nil {
		return err
	}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			err = s.fault(r)
		}
	}()
	return s.db.View(fn)
}

func (s *Store) update(fn func(*bolt.Tx) error) (err error) {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	if err := s.Fault(); err != nil {
		return err
	}
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			err = s.fault(r)
		}
	}()
	return s.db.Update(fn)
}
