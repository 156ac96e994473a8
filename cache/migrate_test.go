package cache

import (
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeV1 builds a schema-1 file the way the first release laid it out.
func writeV1(t *testing.T, path string) {
	rawBolt(t, path, func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucket(bktMeta)
		_ = meta.Put(v1KeySchemaVersion, u64(1))
		_ = meta.Put(keyWatermark, mustJSON(t, t0))
		_ = meta.Put(keyLastSync, mustJSON(t, t0.Add(-time.Hour)))
		_ = meta.Put([]byte("install-id"), []byte("abc"))
		m, _ := tx.CreateBucket(bktMachine)
		_ = m.Put(keyRecord, mustJSON(t, MachineRecord{ID: "m1", Fingerprint: "fp"}))
		c, _ := tx.CreateBucket(bktCerts)
		_ = c.Put([]byte("machine"), mustJSON(t, CertRecord{Raw: []byte("cert"), FetchedAt: t0}))
		v, _ := tx.CreateBucket(bktValidation)
		_ = v.Put(keyLast, mustJSON(t, ValidationRecord{Valid: true, Code: "VALID", At: t0}))
		l, _ := tx.CreateBucket(bktLeases)
		return l.Put([]byte("L1"), mustJSON(t, LeaseRecord{ID: "L1", PID: 9}))
	})
}

// writeV2 builds a schema-2 file: v1 reorganised, no outbox yet.
func writeV2(t *testing.T, path string) {
	rawBolt(t, path, func(tx *bolt.Tx) error {
		s, _ := tx.CreateBucket(bktSchema)
		_ = s.Put(keyVersion, u64(2))
		c, _ := tx.CreateBucket(bktClock)
		_ = c.Put(keyWatermark, mustJSON(t, t0))
		for _, b := range [][]byte{bktMachine, bktCerts, bktValidation, bktMeta} {
			_, _ = tx.CreateBucket(b)
		}
		l, _ := tx.CreateBucket(bktLeases)
		return l.Put([]byte("L2"), mustJSON(t, LeaseRecord{ID: "L2"}))
	})
}

func TestMigrationsOrdered(t *testing.T) {
	for i, m := range migrations {
		if m.from != i+1 || m.apply == nil || m.name == "" {
			t.Fatalf("migrations[%d] = from %d %q", i, m.from, m.name)
		}
	}
	if schemaVersion != 3 {
		t.Fatalf("schemaVersion = %d; update doc.go's tree and this test together", schemaVersion)
	}
}

func TestMigrateV1toV2(t *testing.T) {
	path := dbPath(t)
	writeV1(t, path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		if v, err := readVersion(tx); err != nil || v != 1 {
			t.Fatalf("v1 readVersion = %d, %v", v, err)
		}
		if err := migrateV1toV2(tx); err != nil {
			return err
		}
		if v, err := readVersion(tx); err != nil || v != 2 {
			t.Fatalf("after migration readVersion = %d, %v", v, err)
		}
		meta := tx.Bucket(bktMeta)
		for _, k := range [][]byte{v1KeySchemaVersion, keyWatermark, keyLastSync} {
			if meta.Get(k) != nil {
				t.Errorf("meta/%s still present", k)
			}
		}
		if string(meta.Get([]byte("install-id"))) != "abc" {
			t.Error("user meta key lost")
		}
		clock := tx.Bucket(bktClock)
		if string(clock.Get(keyWatermark)) != string(mustJSON(t, t0)) ||
			string(clock.Get(keyLastSync)) != string(mustJSON(t, t0.Add(-time.Hour))) {
			t.Error("clock values not moved")
		}
		if tx.Bucket(bktOutbox) != nil {
			t.Error("v2 has no outbox")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMigrateV2toV3(t *testing.T) {
	path := dbPath(t)
	writeV2(t, path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		if err := migrateV2toV3(tx); err != nil {
			return err
		}
		if tx.Bucket(bktOutbox) == nil {
			t.Error("outbox not created")
		}
		if v := tx.Bucket(bktSchema).Get(keyVersion); binary.BigEndian.Uint64(v) != 3 {
			t.Errorf("version = %x", v)
		}
		return checkLayout(tx)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenMigratesV1File(t *testing.T) {
	path := dbPath(t)
	writeV1(t, path)
	s := openT(t, path)
	if s.Fresh() || s.Recovered() != nil {
		t.Fatalf("migrated store Fresh=%v Recovered=%v", s.Fresh(), s.Recovered())
	}
	if w, err := s.Watermark(); err != nil || !w.Equal(t0) {
		t.Fatalf("Watermark = %v, %v", w, err)
	}
	if ls, err := s.LastSync(); err != nil || !ls.Equal(t0.Add(-time.Hour)) {
		t.Fatalf("LastSync = %v, %v", ls, err)
	}
	if v, err := s.Meta("install-id"); err != nil || string(v) != "abc" {
		t.Fatalf("Meta = %q, %v", v, err)
	}
	if v, err := s.Meta(string(v1KeySchemaVersion)); err != nil || v != nil {
		t.Fatalf("old version key visible as meta: %q, %v", v, err)
	}
	if m, err := s.Machine(); err != nil || m.ID != "m1" {
		t.Fatalf("Machine = %+v, %v", m, err)
	}
	if c, err := s.Certificate(CertMachine); err != nil || string(c.Raw) != "cert" {
		t.Fatalf("Certificate = %+v, %v", c, err)
	}
	if ls, err := s.Leases(); err != nil || len(ls) != 1 || ls[0].PID != 9 {
		t.Fatalf("Leases = %+v, %v", ls, err)
	}
	if seq, err := s.Enqueue(OutboxEntry{Kind: "kill"}); err != nil || seq != 1 {
		t.Fatalf("Enqueue = %d, %v", seq, err)
	}
	var v uint64
	_ = s.db.View(func(tx *bolt.Tx) error { v = binary.BigEndian.Uint64(tx.Bucket(bktSchema).Get(keyVersion)); return nil })
	if v != uint64(schemaVersion) {
		t.Fatalf("stored version %d", v)
	}
}

func TestOpenMigratesV2File(t *testing.T) {
	path := dbPath(t)
	writeV2(t, path)
	s := openT(t, path)
	if ls, err := s.Leases(); err != nil || len(ls) != 1 || ls[0].ID != "L2" {
		t.Fatalf("Leases = %+v, %v", ls, err)
	}
	if _, err := s.Enqueue(OutboxEntry{Kind: "spawn"}); err != nil {
		t.Fatal(err)
	}
}
