package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// MachineRecord is this machine's activation as recorded at activation time.
type MachineRecord struct {
	ID          string            `json:"id"`
	LicenseID   string            `json:"license_id"`
	Fingerprint string            `json:"fingerprint"`
	Components  []ComponentRecord `json:"components,omitempty"`
	ActivatedAt time.Time         `json:"activated_at"`
}

// ComponentRecord is one hardware component fingerprint.
type ComponentRecord struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"`
}

// CertRecord is a signed certificate exactly as received. The cache does not
// verify it.
type CertRecord struct {
	Raw       []byte    `json:"raw"`
	FetchedAt time.Time `json:"fetched_at"`
}

// ValidationRecord is the last validation answer from Keygen.
type ValidationRecord struct {
	Valid     bool      `json:"valid"`
	Code      string    `json:"code,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	At        time.Time `json:"at"`
	LicenseID string    `json:"license_id,omitempty"`
}

// LeaseRecord is one lease held by a local application.
type LeaseRecord struct {
	ID         string    `json:"id"`
	ProcessID  string    `json:"process_id,omitempty"`
	KeygenPID  string    `json:"keygen_pid,omitempty"`
	App        string    `json:"app,omitempty"`
	AppVersion string    `json:"app_version,omitempty"`
	User       string    `json:"user,omitempty"`
	Exe        string    `json:"exe,omitempty"`
	PID        int       `json:"pid"`
	StartTime  uint64    `json:"start_time,omitempty"`
	Offline    bool      `json:"offline,omitempty"`
	Created    time.Time `json:"created"`
	// IntervalSeconds is the Keygen process's heartbeat interval; 0 in
	// records written before it was added (the reader falls back).
	IntervalSeconds int `json:"interval_seconds,omitempty"`
	// Seq orders the leases by when the agent made them (newest highest),
	// across restarts; 0 in records written before it was added.
	Seq uint64 `json:"seq,omitempty"`
}

// OutboxEntry is a Keygen call to replay when online. Seq is assigned by
// Enqueue and orders the outbox.
type OutboxEntry struct {
	Seq       uint64 `json:"seq"`
	Kind      string `json:"kind"` // OutboxSpawn, OutboxKill or OutboxUse
	LeaseID   string `json:"lease_id,omitempty"`
	ProcessID string `json:"process_id,omitempty"`
	// User is the local uid whose lease the entry serves: its replay is
	// charged to that user's share of the request budget.
	User    string          `json:"user,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
	Created time.Time       `json:"created"`
}

// Outbox entry kinds.
const (
	// OutboxSpawn creates the Keygen process of a lease granted offline;
	// the entry's Payload is the process metadata.
	OutboxSpawn = "spawn"
	// OutboxKill ends the Keygen process ProcessID of a released lease.
	OutboxKill = "kill"
	// OutboxUse records metered uses of the license (Keygen's
	// increment-usage, or decrement-usage for a negative count); the
	// Payload holds the license id and the count.
	OutboxUse = "use"
)

// Certificate kinds.
const (
	CertMachine = "machine"
	CertLicense = "license"
	// CertEvidence is the unencrypted machine file (without the license)
	// that the agent hands apps as lease evidence.
	CertEvidence = "machine-evidence"
)

// ErrInvalidArgument is returned for an unusable argument (empty id, unknown
// certificate kind...).
var ErrInvalidArgument = errors.New("cache: invalid argument")

// getJSON decodes bucket/key into out; ok is false when the key is absent.
func getJSON(tx *bolt.Tx, bucket, key []byte, keyName string, out any) (ok bool, err error) {
	b, err := bucketOf(tx, bucket)
	if err != nil {
		return false, err
	}
	v := b.Get(key)
	if v == nil {
		return false, nil
	}
	if err := json.Unmarshal(v, out); err != nil {
		return false, &RecordError{Bucket: string(bucket), Key: keyName, Err: err}
	}
	return true, nil
}

func putJSON(tx *bolt.Tx, bucket, key []byte, v any) error {
	b, err := bucketOf(tx, bucket)
	if err != nil {
		return err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("cache: encode %s/%s: %w", bucket, key, err)
	}
	return b.Put(key, data)
}

func bucketOf(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	b := tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("%w: bucket %s missing", ErrCorrupt, name)
	}
	return b, nil
}

// normTime strips the monotonic reading and zone so a stored time compares
// equal to the one read back.
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).UTC()
}

// Machine returns the machine record, or nil if none.
func (s *Store) Machine() (*MachineRecord, error) {
	var m MachineRecord
	var ok bool
	err := s.view(func(tx *bolt.Tx) (err error) {
		ok, err = getJSON(tx, bktMachine, keyRecord, "record", &m)
		return err
	})
	if err != nil || !ok {
		return nil, err
	}
	return &m, nil
}

// PutMachine replaces the machine record.
func (s *Store) PutMachine(m MachineRecord) error {
	m.ActivatedAt = normTime(m.ActivatedAt)
	return s.update(func(tx *bolt.Tx) error { return putJSON(tx, bktMachine, keyRecord, m) })
}

// DeleteMachine removes the machine record.
func (s *Store) DeleteMachine() error {
	return s.update(func(tx *bolt.Tx) error {
		b, err := bucketOf(tx, bktMachine)
		if err != nil {
			return err
		}
		return b.Delete(keyRecord)
	})
}

func certKey(kind string) ([]byte, error) {
	switch kind {
	case CertMachine, CertLicense, CertEvidence:
		return []byte(kind), nil
	}
	return nil, fmt.Errorf("%w: certificate kind %q (want %q or %q)", ErrInvalidArgument, kind, CertMachine, CertLicense)
}

// Certificate returns the stored certificate of kind "machine" or "license",
// or nil if none.
func (s *Store) Certificate(kind string) (*CertRecord, error) {
	key, err := certKey(kind)
	if err != nil {
		return nil, err
	}
	var c CertRecord
	var ok bool
	err = s.view(func(tx *bolt.Tx) (err error) {
		ok, err = getJSON(tx, bktCerts, key, kind, &c)
		return err
	})
	if err != nil || !ok {
		return nil, err
	}
	return &c, nil
}

// PutCertificate stores raw exactly as given.
func (s *Store) PutCertificate(kind string, raw []byte, fetchedAt time.Time) error {
	key, err := certKey(kind)
	if err != nil {
		return err
	}
	rec := CertRecord{Raw: raw, FetchedAt: normTime(fetchedAt)}
	return s.update(func(tx *bolt.Tx) error { return putJSON(tx, bktCerts, key, rec) })
}

// DeleteCertificate removes the certificate of kind.
func (s *Store) DeleteCertificate(kind string) error {
	key, err := certKey(kind)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		b, err := bucketOf(tx, bktCerts)
		if err != nil {
			return err
		}
		return b.Delete(key)
	})
}

// Validation returns the last validation result, or nil if none.
func (s *Store) Validation() (*ValidationRecord, error) {
	var v ValidationRecord
	var ok bool
	err := s.view(func(tx *bolt.Tx) (err error) {
		ok, err = getJSON(tx, bktValidation, keyLast, "last", &v)
		return err
	})
	if err != nil || !ok {
		return nil, err
	}
	return &v, nil
}

// PutValidation replaces the last validation result.
func (s *Store) PutValidation(v ValidationRecord) error {
	v.At = normTime(v.At)
	return s.update(func(tx *bolt.Tx) error { return putJSON(tx, bktValidation, keyLast, v) })
}

// PutLease inserts or replaces the lease with l.ID.
func (s *Store) PutLease(l LeaseRecord) error {
	if l.ID == "" {
		return fmt.Errorf("%w: empty lease id", ErrInvalidArgument)
	}
	if len(l.ID) > bolt.MaxKeySize || !utf8.ValidString(l.ID) {
		return fmt.Errorf("%w: lease id must be valid UTF-8 of at most %d bytes", ErrInvalidArgument, bolt.MaxKeySize)
	}
	l.Created = normTime(l.Created)
	return s.update(func(tx *bolt.Tx) error { return putJSON(tx, bktLeases, []byte(l.ID), l) })
}

// DeleteLease removes a lease; deleting an unknown id is not an error.
func (s *Store) DeleteLease(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty lease id", ErrInvalidArgument)
	}
	return s.update(func(tx *bolt.Tx) error {
		b, err := bucketOf(tx, bktLeases)
		if err != nil {
			return err
		}
		return b.Delete([]byte(id))
	})
}

// Leases returns all leases ordered by id.
func (s *Store) Leases() ([]LeaseRecord, error) {
	var out []LeaseRecord
	err := s.view(func(tx *bolt.Tx) error {
		b, err := bucketOf(tx, bktLeases)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var l LeaseRecord
			if err := json.Unmarshal(v, &l); err != nil {
				return &RecordError{Bucket: "leases", Key: string(k), Err: err}
			}
			if l.ID != string(k) {
				return &RecordError{Bucket: "leases", Key: string(k), Err: fmt.Errorf("record id %q", l.ID)}
			}
			out = append(out, l)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Enqueue appends e to the outbox and returns its sequence number (also
// stored as e.Seq). A zero Created is set to now.
func (s *Store) Enqueue(e OutboxEntry) (uint64, error) {
	if e.Kind == "" {
		return 0, fmt.Errorf("%w: empty outbox kind", ErrInvalidArgument)
	}
	if e.Created.IsZero() {
		e.Created = s.opts.Now()
	}
	e.Created = normTime(e.Created)
	if len(e.Payload) > 0 && !json.Valid(e.Payload) {
		return 0, fmt.Errorf("%w: outbox payload is not valid JSON", ErrInvalidArgument)
	}
	err := s.update(func(tx *bolt.Tx) error {
		b, err := bucketOf(tx, bktOutbox)
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		e.Seq = seq
		return putJSON(tx, bktOutbox, u64(seq), e)
	})
	if err != nil {
		return 0, err
	}
	return e.Seq, nil
}

// Outbox returns the pending entries in sequence order.
func (s *Store) Outbox() ([]OutboxEntry, error) {
	var out []OutboxEntry
	err := s.view(func(tx *bolt.Tx) error {
		b, err := bucketOf(tx, bktOutbox)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return &RecordError{Bucket: "outbox", Key: fmt.Sprintf("%x", k), Err: errors.New("key is not a sequence number")}
			}
			seq := binary.BigEndian.Uint64(k)
			var e OutboxEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return &RecordError{Bucket: "outbox", Key: strconv.FormatUint(seq, 10), Err: err}
			}
			e.Seq = seq
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Ack removes the outbox entry seq; acking an unknown seq is not an error.
func (s *Store) Ack(seq uint64) error {
	return s.update(func(tx *bolt.Tx) error {
		b, err := bucketOf(tx, bktOutbox)
		if err != nil {
			return err
		}
		return b.Delete(u64(seq))
	})
}

func getTime(tx *bolt.Tx, key []byte) (time.Time, error) {
	var t time.Time
	if _, err := getJSON(tx, bktClock, key, string(key), &t); err != nil {
		return time.Time{}, err
	}
	return normTime(t), nil
}

// Watermark returns the trusted-time watermark (zero if none).
func (s *Store) Watermark() (t time.Time, err error) {
	err = s.view(func(tx *bolt.Tx) (err error) {
		t, err = getTime(tx, keyWatermark)
		return err
	})
	return t, err
}

// AdvanceWatermark raises the watermark to t if t is later, and returns the
// watermark afterwards. It never moves it back.
func (s *Store) AdvanceWatermark(t time.Time) (time.Time, error) {
	t = normTime(t)
	var cur time.Time
	err := s.update(func(tx *bolt.Tx) (err error) {
		cur, err = getTime(tx, keyWatermark)
		if err != nil {
			return err
		}
		if !t.After(cur) {
			return nil
		}
		cur = t
		return putJSON(tx, bktClock, keyWatermark, t)
	})
	if err != nil {
		return time.Time{}, err
	}
	return cur, nil
}

// LastSync returns the time of the last successful sync with Keygen (zero if
// none).
func (s *Store) LastSync() (t time.Time, err error) {
	err = s.view(func(tx *bolt.Tx) (err error) {
		t, err = getTime(tx, keyLastSync)
		return err
	})
	return t, err
}

// SetLastSync records the last successful sync.
func (s *Store) SetLastSync(t time.Time) error {
	t = normTime(t)
	return s.update(func(tx *bolt.Tx) error { return putJSON(tx, bktClock, keyLastSync, t) })
}

// Meta returns a copy of the blob stored under key, or nil if none.
func (s *Store) Meta(key string) ([]byte, error) {
	if key == "" {
		return nil, fmt.Errorf("%w: empty meta key", ErrInvalidArgument)
	}
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		b, err := bucketOf(tx, bktMeta)
		if err != nil {
			return err
		}
		if v := b.Get([]byte(key)); v != nil {
			out = bytes.Clone(v)
		}
		return nil
	})
	return out, err
}

// PutMeta stores a small blob under key (nil is stored as empty).
func (s *Store) PutMeta(key string, v []byte) error {
	if key == "" || len(key) > bolt.MaxKeySize {
		return fmt.Errorf("%w: meta key length %d", ErrInvalidArgument, len(key))
	}
	if v == nil {
		v = []byte{}
	}
	return s.update(func(tx *bolt.Tx) error {
		b, err := bucketOf(tx, bktMeta)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), v)
	})
}
