package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 890, time.UTC)

func testOptions() Options {
	return Options{LockTimeout: 100 * time.Millisecond, Now: func() time.Time { return t0 }}
}

func dbPath(t testing.TB) string {
	return filepath.Join(tempDir(t), "state", "agent.db")
}

// tempDir is t.TempDir without its cleanup check: the Windows tests run
// under Wine, whose os.RemoveAll of a non-empty directory fails.
func tempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kga-cache")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func openT(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path, testOptions())
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestOpenFreshThenReopen(t *testing.T) {
	path := dbPath(t)
	s := openT(t, path)
	if !s.Fresh() || s.Recovered() != nil {
		t.Fatalf("new store: Fresh=%v Recovered=%v, want true,nil", s.Fresh(), s.Recovered())
	}
	if s.Path() != path {
		t.Fatalf("Path=%q want %q", s.Path(), path)
	}
	if err := s.PutMeta("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s2 := openT(t, path)
	if s2.Fresh() || s2.Recovered() != nil {
		t.Fatalf("reopened store: Fresh=%v Recovered=%v, want false,nil", s2.Fresh(), s2.Recovered())
	}
	if v, err := s2.Meta("k"); err != nil || string(v) != "v" {
		t.Fatalf("Meta after reopen = %q, %v", v, err)
	}
}

func TestMachine(t *testing.T) {
	s := openT(t, dbPath(t))
	if m, err := s.Machine(); m != nil || err != nil {
		t.Fatalf("empty Machine() = %v, %v", m, err)
	}
	want := MachineRecord{ID: "m1", LicenseID: "l1", Fingerprint: "fp",
		Components:  []ComponentRecord{{Name: "cpu", Fingerprint: "c1"}, {Name: "disk-0", Fingerprint: "d0"}},
		ActivatedAt: t0.In(time.FixedZone("X", 3600))}
	if err := s.PutMachine(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Machine()
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "m1" || got.LicenseID != "l1" || got.Fingerprint != "fp" || len(got.Components) != 2 ||
		got.Components[1] != want.Components[1] || !got.ActivatedAt.Equal(t0) {
		t.Fatalf("Machine() = %+v", got)
	}
	if err := s.DeleteMachine(); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Machine(); m != nil || err != nil {
		t.Fatalf("after delete Machine() = %v, %v", m, err)
	}
}

func TestCertificate(t *testing.T) {
	s := openT(t, dbPath(t))
	raw := []byte("-----BEGIN MACHINE FILE-----\r\nabc\xff\x00\r\n-----END MACHINE FILE-----\r\n")
	if c, err := s.Certificate(CertMachine); c != nil || err != nil {
		t.Fatalf("empty Certificate = %v, %v", c, err)
	}
	if err := s.PutCertificate(CertMachine, raw, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCertificate(CertLicense, []byte("lic"), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	c, err := s.Certificate(CertMachine)
	if err != nil || !bytes.Equal(c.Raw, raw) || !c.FetchedAt.Equal(t0) {
		t.Fatalf("Certificate(machine) = %+v, %v; want raw bytes preserved", c, err)
	}
	if err := s.DeleteCertificate(CertMachine); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Certificate(CertMachine); c != nil || err != nil {
		t.Fatalf("after delete = %v, %v", c, err)
	}
	if c, err := s.Certificate(CertLicense); err != nil || string(c.Raw) != "lic" {
		t.Fatalf("license cert = %v, %v", c, err)
	}
	for _, f := range []func() error{
		func() error { _, err := s.Certificate("x"); return err },
		func() error { return s.PutCertificate("", nil, t0) },
		func() error { return s.DeleteCertificate("MACHINE") },
	} {
		if err := f(); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("bad kind: err=%v, want ErrInvalidArgument", err)
		}
	}
}

func TestValidation(t *testing.T) {
	s := openT(t, dbPath(t))
	if v, err := s.Validation(); v != nil || err != nil {
		t.Fatalf("empty Validation = %v, %v", v, err)
	}
	want := ValidationRecord{Valid: false, Code: "SUSPENDED", Detail: "is suspended", At: t0, LicenseID: "l1"}
	if err := s.PutValidation(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Validation()
	if err != nil || *got != want {
		t.Fatalf("Validation = %+v, %v; want %+v", got, err, want)
	}
}

func TestLeases(t *testing.T) {
	s := openT(t, dbPath(t))
	if ls, err := s.Leases(); err != nil || len(ls) != 0 {
		t.Fatalf("empty Leases = %v, %v", ls, err)
	}
	for _, id := range []string{"b", "a", "c"} {
		if err := s.PutLease(LeaseRecord{ID: id, App: "app-" + id, PID: 42, StartTime: 7, Created: t0}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutLease(LeaseRecord{ID: "b", App: "replaced", Offline: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteLease("c"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteLease("unknown"); err != nil {
		t.Fatalf("DeleteLease(unknown) = %v", err)
	}
	ls, err := s.Leases()
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0].ID != "a" || ls[0].PID != 42 || !ls[0].Created.Equal(t0) ||
		ls[1].ID != "b" || ls[1].App != "replaced" || !ls[1].Offline {
		t.Fatalf("Leases = %+v", ls)
	}
	if err := s.PutLease(LeaseRecord{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty id: %v", err)
	}
	if err := s.DeleteLease(""); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty id: %v", err)
	}
}

func TestOutbox(t *testing.T) {
	path := dbPath(t)
	s := openT(t, path)
	var seqs []uint64
	for i, kind := range []string{"spawn", "kill", "deactivate"} {
		e := OutboxEntry{Kind: kind, LeaseID: "l", Payload: json.RawMessage(`{"i":` + string(rune('0'+i)) + `}`)}
		seq, err := s.Enqueue(e)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	if seqs[0] >= seqs[1] || seqs[1] >= seqs[2] {
		t.Fatalf("sequence not increasing: %v", seqs)
	}
	if err := s.Ack(seqs[1]); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(9999); err != nil {
		t.Fatalf("Ack(unknown) = %v", err)
	}
	if _, err := s.Enqueue(OutboxEntry{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty kind: %v", err)
	}
	if _, err := s.Enqueue(OutboxEntry{Kind: "kill", Payload: json.RawMessage("{")}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad payload: %v", err)
	}
	s.Close()

	s = openT(t, path)
	seq4, err := s.Enqueue(OutboxEntry{Kind: "kill", Created: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if seq4 <= seqs[2] {
		t.Fatalf("sequence reused after reopen: %d <= %d", seq4, seqs[2])
	}
	out, err := s.Outbox()
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 || out[0].Seq != seqs[0] || out[0].Kind != "spawn" || string(out[0].Payload) != `{"i":0}` ||
		!out[0].Created.Equal(t0) || out[1].Seq != seqs[2] || out[2].Seq != seq4 || !out[2].Created.Equal(t0.Add(time.Minute)) {
		t.Fatalf("Outbox = %+v", out)
	}
}

func TestWatermark(t *testing.T) {
	path := dbPath(t)
	s := openT(t, path)
	if w, err := s.Watermark(); err != nil || !w.IsZero() {
		t.Fatalf("empty Watermark = %v, %v", w, err)
	}
	steps := []struct{ in, want time.Time }{
		{t0, t0},
		{t0.Add(-time.Hour), t0}, // never goes back
		{t0.Add(time.Second), t0.Add(time.Second)}, // forward
		{t0.Add(time.Second), t0.Add(time.Second)}, // equal
		{time.Time{}, t0.Add(time.Second)},
	}
	for i, st := range steps {
		got, err := s.AdvanceWatermark(st.in)
		if err != nil || !got.Equal(st.want) {
			t.Fatalf("step %d: AdvanceWatermark(%v) = %v, %v; want %v", i, st.in, got, err, st.want)
		}
	}
	// A time with a monotonic reading is stored as wall clock.
	now := time.Now()
	if got, err := s.AdvanceWatermark(now); err != nil || !got.Equal(now) {
		t.Fatalf("AdvanceWatermark(now) = %v, %v", got, err)
	}
	s.Close()
	s = openT(t, path)
	if w, err := s.Watermark(); err != nil || !w.Equal(now) {
		t.Fatalf("Watermark after reopen = %v, %v; want %v", w, err, now)
	}
}

func TestLastSync(t *testing.T) {
	s := openT(t, dbPath(t))
	if ts, err := s.LastSync(); err != nil || !ts.IsZero() {
		t.Fatalf("empty LastSync = %v, %v", ts, err)
	}
	for _, ts := range []time.Time{t0.Add(time.Hour), t0} { // may go back: it is a record, not a watermark
		if err := s.SetLastSync(ts); err != nil {
			t.Fatal(err)
		}
		if got, err := s.LastSync(); err != nil || !got.Equal(ts) {
			t.Fatalf("LastSync = %v, %v; want %v", got, err, ts)
		}
	}
}

func TestMeta(t *testing.T) {
	s := openT(t, dbPath(t))
	if v, err := s.Meta("nope"); v != nil || err != nil {
		t.Fatalf("missing Meta = %v, %v", v, err)
	}
	if err := s.PutMeta("empty", nil); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Meta("empty"); v == nil || len(v) != 0 || err != nil {
		t.Fatalf("empty Meta = %#v, %v; want non-nil empty", v, err)
	}
	buf := []byte("value")
	if err := s.PutMeta("k", buf); err != nil {
		t.Fatal(err)
	}
	v, _ := s.Meta("k")
	v[0] = 'X' // the returned slice is a copy
	if v2, _ := s.Meta("k"); string(v2) != "value" {
		t.Fatalf("Meta not copied: %q", v2)
	}
	if err := s.PutMeta("", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty key: %v", err)
	}
	if _, err := s.Meta(""); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty key: %v", err)
	}
}

func TestUndecodableRecords(t *testing.T) {
	s := openT(t, dbPath(t))
	if err := s.PutLease(LeaseRecord{ID: "ok"}); err != nil {
		t.Fatal(err)
	}
	raw := func(bucket, key []byte, v string) {
		t.Helper()
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	raw(bktMachine, keyRecord, "{not json")
	raw(bktLeases, []byte("bad"), `{"id":7}`)
	raw(bktOutbox, u64(5), "[")
	raw(bktClock, keyWatermark, `"yesterday"`)
	raw(bktCerts, []byte("machine"), `{"raw":"!!"}`)
	raw(bktValidation, keyLast, `nul`)
	raw(bktClock, keyLastSync, `{}`)

	checks := []struct {
		name, bucket, key string
		err               error
	}{
		{"Machine", "machine", "record", func() error { _, err := s.Machine(); return err }()},
		{"Leases", "leases", "bad", func() error { _, err := s.Leases(); return err }()},
		{"Outbox", "outbox", "5", func() error { _, err := s.Outbox(); return err }()},
		{"Watermark", "clock", "watermark", func() error { _, err := s.Watermark(); return err }()},
		{"AdvanceWatermark", "clock", "watermark", func() error { _, err := s.AdvanceWatermark(t0); return err }()},
		{"Certificate", "certs", "machine", func() error { _, err := s.Certificate(CertMachine); return err }()},
		{"Validation", "validation", "last", func() error { _, err := s.Validation(); return err }()},
		{"LastSync", "clock", "last_sync", func() error { _, err := s.LastSync(); return err }()},
	}
	for _, c := range checks {
		var re *RecordError
		if !errors.Is(c.err, ErrCorrupt) || !errors.As(c.err, &re) || re.Bucket != c.bucket || re.Key != c.key {
			t.Errorf("%s: err = %v; want *RecordError %s/%s matching ErrCorrupt", c.name, c.err, c.bucket, c.key)
		}
	}
}

func TestPanicInTransactionIsErrCorrupt(t *testing.T) {
	s := openT(t, dbPath(t))
	err := s.update(func(*bolt.Tx) error { panic("damaged page") })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("update panic: %v, want ErrCorrupt", err)
	}
	err = s.view(func(*bolt.Tx) error { var p *int; return errors.New(string(rune(*p))) })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("view nil deref: %v, want ErrCorrupt", err)
	}
	// A fault may leave bbolt's locks held (a truncated file does), so the
	// store is unusable from then on: later calls fail fast, never hang.
	if err := s.PutLease(LeaseRecord{ID: "after"}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write after a fault: %v, want ErrCorrupt", err)
	}
	if err := s.Fault(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Fault() = %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Close after a fault: %v", err)
	}
}

func TestMissingBucketIsErrCorrupt(t *testing.T) {
	s := openT(t, dbPath(t))
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bktLeases) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Leases(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Leases without bucket: %v", err)
	}
	if err := s.PutLease(LeaseRecord{ID: "x"}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("PutLease without bucket: %v", err)
	}
}
