package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"

	bolt "go.etcd.io/bbolt"
)

// Bucket and key names (see the tree in doc.go).
var (
	bktSchema     = []byte("schema")
	bktMachine    = []byte("machine")
	bktCerts      = []byte("certs")
	bktValidation = []byte("validation")
	bktLeases     = []byte("leases")
	bktOutbox     = []byte("outbox")
	bktClock      = []byte("clock")
	bktMeta       = []byte("meta")

	keyVersion   = []byte("version")
	keyRecord    = []byte("record")
	keyLast      = []byte("last")
	keyWatermark = []byte("watermark")
	keyLastSync  = []byte("last_sync")

	// v1 only: everything small lived in meta/.
	v1KeySchemaVersion = []byte("schema_version")
)

// currentBuckets is the v3 top-level layout.
var currentBuckets = [][]byte{bktSchema, bktMachine, bktCerts, bktValidation, bktLeases, bktOutbox, bktClock, bktMeta}

// migration upgrades a database from schema version from to from+1.
type migration struct {
	from  int
	name  string
	apply func(tx *bolt.Tx) error
}

// migrations is ordered: migrations[i].from == i+1.
var migrations = []migration{
	{from: 1, name: "move schema version and clock out of meta", apply: migrateV1toV2},
	{from: 2, name: "add outbox bucket", apply: migrateV2toV3},
}

// schemaVersion is the layout this build writes.
var schemaVersion = len(migrations) + 1

// errSchema marks a layout that is not ours: the file is quarantined.
var errSchema = errors.New("unrecognised layout")

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// readVersion returns the file's schema version, 0 for an empty database.
func readVersion(tx *bolt.Tx) (int, error) {
	if b := tx.Bucket(bktSchema); b != nil {
		v := b.Get(keyVersion)
		if len(v) != 8 {
			return 0, fmt.Errorf("%w: schema/version is %d bytes", errSchema, len(v))
		}
		return versionInt(binary.BigEndian.Uint64(v))
	}
	if b := tx.Bucket(bktMeta); b != nil {
		if v := b.Get(v1KeySchemaVersion); len(v) == 8 {
			return versionInt(binary.BigEndian.Uint64(v))
		}
	}
	empty := true
	_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
	if empty {
		return 0, nil
	}
	return 0, fmt.Errorf("%w: buckets but no schema version", errSchema)
}

func versionInt(v uint64) (int, error) {
	if v == 0 || v > 1<<20 {
		return 0, fmt.Errorf("%w: schema version %d", errSchema, v)
	}
	return int(v), nil
}

// prepare creates the layout in an empty database or migrates an older one.
// reason is set when the file is not a keygen-agent cache.
func (s *Store) prepare(db *bolt.DB) (fresh bool, reason string, err error) {
	s.db = db
	defer func() { s.db = nil }()
	err = s.update(func(tx *bolt.Tx) error {
		v, err := readVersion(tx)
		if err != nil {
			return err
		}
		switch {
		case v == 0:
			fresh = true
			return createCurrent(tx)
		case v > schemaVersion:
			return fmt.Errorf("%w: %s has schema %d, this agent knows up to %d",
				ErrSchemaTooNew, s.path, v, schemaVersion)
		case v < schemaVersion:
			if err := migrate(tx, v); err != nil {
				return err
			}
			s.log.Info("cache: migrated schema", "path", s.path, "from", v, "to", schemaVersion)
		}
		return checkLayout(tx)
	})
	switch {
	case err == nil:
		return fresh, "", nil
	case errors.Is(err, errSchema), errors.Is(err, ErrCorrupt):
		return false, err.Error(), nil
	case errors.Is(err, ErrSchemaTooNew):
		return false, "", err
	default:
		return false, "", fmt.Errorf("cache: prepare %s: %w", s.path, err)
	}
}

func createCurrent(tx *bolt.Tx) error {
	for _, name := range currentBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return tx.Bucket(bktSchema).Put(keyVersion, u64(uint64(schemaVersion)))
}

// migrate runs every migration from version v on, in order, in tx.
func migrate(tx *bolt.Tx, v int) error {
	for _, m := range migrations[v-1:] {
		if err := m.apply(tx); err != nil {
			return fmt.Errorf("migration %d→%d (%s): %w", m.from, m.from+1, m.name, err)
		}
	}
	return tx.Bucket(bktSchema).Put(keyVersion, u64(uint64(schemaVersion)))
}

func checkLayout(tx *bolt.Tx) error {
	for _, name := range currentBuckets {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("%w: bucket %s missing", errSchema, name)
		}
	}
	return nil
}

// migrateV1toV2 moves meta/schema_version to schema/version and
// meta/{watermark,last_sync} to clock/, so meta/ holds only user keys.
func migrateV1toV2(tx *bolt.Tx) error {
	meta := tx.Bucket(bktMeta)
	if meta == nil {
		return fmt.Errorf("%w: v1 without meta bucket", errSchema)
	}
	schema, err := tx.CreateBucket(bktSchema)
	if err != nil {
		return err
	}
	clock, err := tx.CreateBucket(bktClock)
	if err != nil {
		return err
	}
	if err := schema.Put(keyVersion, u64(2)); err != nil {
		return err
	}
	for _, k := range [][]byte{keyWatermark, keyLastSync} {
		if v := meta.Get(k); v != nil {
			if err := clock.Put(k, bytes.Clone(v)); err != nil {
				return err
			}
			if err := meta.Delete(k); err != nil {
				return err
			}
		}
	}
	return meta.Delete(v1KeySchemaVersion)
}

// migrateV2toV3 adds the outbox bucket.
func migrateV2toV3(tx *bolt.Tx) error {
	if _, err := tx.CreateBucket(bktOutbox); err != nil {
		return err
	}
	return tx.Bucket(bktSchema).Put(keyVersion, u64(3))
}

// walkTx reads every bucket, key and value and checks key order, so that a
// damaged page panics or faults on the calling goroutine.
func walkTx(tx *bolt.Tx) error {
	return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		return walkBucket(b, string(name), 0)
	})
}

func walkBucket(b *bolt.Bucket, path string, depth int) error {
	if depth > 8 {
		return fmt.Errorf("%s: buckets nested too deep", path)
	}
	h := fnv.New64a()
	var prev []byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			return fmt.Errorf("%s: keys out of order", path)
		}
		prev = append(prev[:0], k...)
		if v == nil {
			child := b.Bucket(k)
			if child == nil {
				return fmt.Errorf("%s: nil value for %q is not a bucket", path, k)
			}
			if err := walkBucket(child, path+"/"+string(k), depth+1); err != nil {
				return err
			}
			continue
		}
		_, _ = h.Write(v)
	}
	return nil
}
