package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// populate creates a store at path with enough data to span many pages and
// returns the file's bytes after Close.
func populate(t testing.TB, path string) []byte {
	t.Helper()
	s, err := Open(path, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error { // one transaction: fast
		for i := range 300 {
			id := "lease-" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26))
			l := LeaseRecord{ID: id, App: strings.Repeat("app", 40), PID: i, Created: t0}
			if err := putJSON(tx, bktLeases, []byte(id), l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutCertificate(CertMachine, bytes.Repeat([]byte("cert"), 3000), t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AdvanceWatermark(t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// expectQuarantined opens path and checks the damaged bytes were moved aside
// unchanged and a working, fresh, empty store took their place.
func expectQuarantined(t *testing.T, path string, damaged []byte) *Store {
	t.Helper()
	s := openT(t, path)
	rec := s.Recovered()
	if rec == nil {
		t.Fatal("Recovered() = nil, want a quarantine")
	}
	if !s.Fresh() {
		t.Fatal("Fresh() = false after quarantine")
	}
	if !strings.HasPrefix(rec.QuarantinedTo, path+".corrupt-20260304T050607Z") || rec.Reason == "" || !rec.At.Equal(t0.Truncate(0)) {
		t.Fatalf("Recovery = %+v", rec)
	}
	kept, err := os.ReadFile(rec.QuarantinedTo)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(kept, damaged) {
		t.Fatalf("quarantine file differs from the damaged original (%d vs %d bytes)", len(kept), len(damaged))
	}
	if ls, err := s.Leases(); err != nil || len(ls) != 0 {
		t.Fatalf("fresh store Leases = %d, %v", len(ls), err)
	}
	if w, err := s.Watermark(); err != nil || !w.IsZero() {
		t.Fatalf("fresh store Watermark = %v, %v (must not survive)", w, err)
	}
	if err := s.PutLease(LeaseRecord{ID: "new"}); err != nil {
		t.Fatalf("fresh store not writable: %v", err)
	}
	t.Logf("quarantined: %s", rec.Reason)
	return s
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestGarbageFileQuarantined(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{11, 4096, 64 << 10} {
		path := dbPath(t)
		garbage := make([]byte, n)
		for i := range garbage {
			garbage[i] = byte(r.Uint32())
		}
		writeFile(t, path, garbage)
		expectQuarantined(t, path, garbage)
	}
}

func TestTruncatedFileQuarantined(t *testing.T) {
	path := dbPath(t)
	full := populate(t, path)
	cut := full[:len(full)/3]
	if err := os.Truncate(path, int64(len(cut))); err != nil {
		t.Fatal(err)
	}
	expectQuarantined(t, path, cut)
	// A second store in this process can be opened and closed normally: no
	// leaked lock on the new file.
}

func TestZeroByteFileQuarantined(t *testing.T) {
	path := dbPath(t)
	writeFile(t, path, nil)
	s := expectQuarantined(t, path, []byte{})
	if !strings.Contains(s.Recovered().Reason, "0-byte") {
		t.Fatalf("reason %q", s.Recovered().Reason)
	}
}

func TestDamagedDataPagesQuarantined(t *testing.T) {
	path := dbPath(t)
	full := populate(t, path)
	const pageSize = 4096
	if len(full) < 16*pageSize {
		t.Fatalf("fixture too small: %d bytes", len(full))
	}
	r := rand.New(rand.NewPCG(3, 4))
	damaged := bytes.Clone(full)
	// Random bytes over the start (header + element table) of every data page
	// past the meta pages.
	for off := 4 * pageSize; off < len(damaged); off += pageSize {
		for i := range 256 {
			damaged[off+i] = byte(r.Uint32())
		}
	}
	writeFile(t, path, damaged)
	expectQuarantined(t, path, damaged)
}

func TestSelfReferentialBranchPageQuarantined(t *testing.T) {
	// bbolt itself would loop forever on this file (Open, Check and cursors).
	path := dbPath(t)
	d := populate(t, path)
	found := false
	for off := 2 * 4096; off+32 <= len(d); off += 4096 {
		id := binary.NativeEndian.Uint64(d[off:])
		if binary.NativeEndian.Uint16(d[off+8:]) == flagBranch && id == uint64(off/4096) {
			binary.NativeEndian.PutUint64(d[off+pageHeaderSize+8:], id)
			found = true
			break
		}
	}
	if !found {
		t.Fatal("fixture has no branch page")
	}
	writeFile(t, path, d)
	s := expectQuarantined(t, path, d)
	if !strings.Contains(s.Recovered().Reason, "reached twice") {
		t.Fatalf("reason %q", s.Recovered().Reason)
	}
}

func TestRandomPageDamageNeverCrashes(t *testing.T) {
	// Smaller, scattered damage: either the store opens with its data (the
	// bytes hit a value) and reads return data or ErrCorrupt, or it is
	// quarantined. Never a panic.
	dir := tempDir(t)
	full := populate(t, filepath.Join(dir, "orig.db"))
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 40 {
		damaged := bytes.Clone(full)
		for range 1 + i%5 {
			off := 2*4096 + r.IntN(len(damaged)-2*4096-64)
			for j := range 1 + r.IntN(64) {
				damaged[off+j] = byte(r.Uint32())
			}
		}
		path := filepath.Join(dir, "case", string(rune('a'+i%26))+string(rune('a'+i/26)), "agent.db")
		writeFile(t, path, damaged)
		s, err := Open(path, testOptions())
		if err != nil {
			t.Fatalf("case %d: Open: %v", i, err)
		}
		if s.Recovered() == nil {
			if _, err := s.Leases(); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("case %d: Leases: %v", i, err)
			}
			if _, err := s.Certificate(CertMachine); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("case %d: Certificate: %v", i, err)
			}
		}
		if err := s.PutLease(LeaseRecord{ID: "z"}); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("case %d: PutLease: %v", i, err)
		}
		s.Close()
	}
}

func TestRenameFailureLeavesMarkerAndNextOpenQuarantines(t *testing.T) {
	path := dbPath(t)
	garbage := bytes.Repeat([]byte("not a bolt file "), 1000)
	writeFile(t, path, garbage)

	renameFile = func(string, string) error { return errors.New("sharing violation") }
	_, err := Open(path, testOptions())
	renameFile = os.Rename
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("Open with failing rename: %v, want ErrCorrupt asking for a restart", err)
	}
	if _, err := os.Stat(path + markerSuffix); err != nil {
		t.Fatalf("no marker: %v", err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, garbage) {
		t.Fatal("damaged file changed")
	}

	s := expectQuarantined(t, path, garbage)
	if !strings.Contains(s.Recovered().Reason, "pending") {
		t.Fatalf("reason %q", s.Recovered().Reason)
	}
	if _, err := os.Stat(path + markerSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker not removed: %v", err)
	}
}

func TestQuarantineNamesDoNotCollide(t *testing.T) {
	path := dbPath(t)
	var names []string
	for i := range 3 {
		b := []byte{byte(i), 'x', 'y'}
		writeFile(t, path, b)
		s := expectQuarantined(t, path, b)
		names = append(names, s.Recovered().QuarantinedTo)
		s.Close()
		os.Remove(path)
	}
	if names[0] == names[1] || names[1] == names[2] || names[0] == names[2] {
		t.Fatalf("names collide: %v", names)
	}
}

func rawBolt(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestForeignBoltFileQuarantined(t *testing.T) {
	path := dbPath(t)
	rawBolt(t, path, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("someone-else"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	})
	orig, _ := os.ReadFile(path)
	s := expectQuarantined(t, path, orig)
	if !strings.Contains(s.Recovered().Reason, "no schema version") {
		t.Fatalf("reason %q", s.Recovered().Reason)
	}
}

func TestSchemaTooNewRefusedNotQuarantined(t *testing.T) {
	path := dbPath(t)
	s := openT(t, path)
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bktSchema).Put(keyVersion, u64(99)) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	before, _ := os.ReadFile(path)
	_, err := Open(path, testOptions())
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open: %v, want ErrSchemaTooNew", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("file modified")
	}
	if m, _ := filepath.Glob(path + ".corrupt-*"); len(m) != 0 {
		t.Fatalf("quarantined: %v", m)
	}
}

func TestDirectoryAtPathIsAnError(t *testing.T) {
	path := dbPath(t)
	if err := os.MkdirAll(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, testOptions()); err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open(dir) = %v, want a plain error", err)
	}
}
