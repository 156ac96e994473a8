package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf8"
)

// jsonString is s after a JSON round trip.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

// FuzzOpen writes arbitrary bytes as agent.db and opens it: the result is
// always a working store or a typed error, never a panic, and quarantined
// bytes are kept unchanged.
func FuzzOpen(f *testing.F) {
	noSync = true
	f.Cleanup(func() { noSync = false })
	// A small valid file with a record in every bucket: large seeds make
	// every mutation slow.
	vpath := filepath.Join(tempDir(f), "seed.db")
	vs, err := Open(vpath, testOptions())
	if err != nil {
		f.Fatal(err)
	}
	for i := range 3 {
		_ = vs.PutLease(LeaseRecord{ID: string(rune('A' + i)), App: "app", PID: i})
	}
	_ = vs.PutCertificate(CertMachine, bytes.Repeat([]byte("c"), 200), t0)
	_, _ = vs.Enqueue(OutboxEntry{Kind: "kill", LeaseID: "A", ProcessID: "p", Created: t0})
	_, _ = vs.AdvanceWatermark(t0)
	_ = vs.PutMeta("k", []byte("v"))
	_ = vs.Close()
	valid, err := os.ReadFile(vpath)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Add(valid)
	f.Add(valid[:len(valid)/3])
	f.Add(valid[:2*4096])
	// The same file with one page damaged, for every page: the fuzzer
	// starts past the meta checks, inside branch, leaf and freelist
	// decoding. Per page: the header (id, flags, count, overflow), then
	// the first element, then the page's end.
	const page = 4096
	for p := 0; p*page < len(valid); p++ {
		for _, at := range []int{0, 8, 10, 12, 16, 24, page - 64} {
			if p*page+at+8 > len(valid) {
				continue
			}
			d := bytes.Clone(valid)
			binary.LittleEndian.PutUint64(d[p*page+at:], 0xfffe_0102_7fff_0001)
			f.Add(d)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(tempDir(t), "agent.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, testOptions())
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSchemaTooNew) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		defer s.Close()
		if rec := s.Recovered(); rec != nil && len(data) > 0 {
			kept, err := os.ReadFile(rec.QuarantinedTo)
			if err != nil || !bytes.Equal(kept, data) {
				t.Fatalf("quarantined bytes differ: %v", err)
			}
		}
		if _, err := s.Leases(); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Leases: %v", err)
		}
		if _, err := s.Outbox(); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Outbox: %v", err)
		}
		if _, err := s.AdvanceWatermark(t0); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("AdvanceWatermark: %v", err)
		}
		if err := s.PutLease(LeaseRecord{ID: "x"}); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("PutLease: %v", err)
		}
	})
}

// FuzzOps drives the public operations with arbitrary records and checks
// them against an in-memory model.
func FuzzOps(f *testing.F) {
	f.Add([]byte("\x00a\x01b\x02\x03\x04\x05\x06"))
	f.Add([]byte{0, 0xff, 0, 0xfe, 1, 0xff, 2, 2, 3, 3, 4, 5, 6, 7, 8})
	f.Add([]byte("\x00\xe2\x82\x00\x00\x04\x04\x07\x07\x07\x08"))
	f.Fuzz(func(t *testing.T, prog []byte) {
		s, err := Open(filepath.Join(tempDir(t), "agent.db"), testOptions())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		leases := map[string]LeaseRecord{}
		var outbox []uint64
		var wm time.Time
		meta := map[string][]byte{}
		next := func() []byte { // a length-prefixed chunk of the program
			if len(prog) == 0 {
				return nil
			}
			n := int(prog[0]) % 9
			prog = prog[1:]
			n = min(n, len(prog))
			b := prog[:n]
			prog = prog[n:]
			return b
		}
		for len(prog) > 0 {
			op := prog[0] % 9
			prog = prog[1:]
			arg := next()
			switch op {
			case 0: // PutLease with arbitrary strings
				l := LeaseRecord{ID: string(arg), App: string(next()), PID: len(arg), StartTime: uint64(len(prog))}
				err := s.PutLease(l)
				if l.ID == "" || !utf8.ValidString(l.ID) {
					if !errors.Is(err, ErrInvalidArgument) {
						t.Fatalf("PutLease(empty) = %v", err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("PutLease: %v", err)
				}
				l.App = jsonString(l.App) // JSON replaces invalid UTF-8
				leases[l.ID] = l
			case 1:
				if len(arg) == 0 {
					continue
				}
				if err := s.DeleteLease(string(arg)); err != nil {
					t.Fatal(err)
				}
				delete(leases, string(arg))
			case 2:
				payload, _ := json.Marshal(string(arg))
				seq, err := s.Enqueue(OutboxEntry{Kind: "spawn", LeaseID: string(arg), Payload: payload})
				if err != nil {
					t.Fatal(err)
				}
				if len(outbox) > 0 && seq <= outbox[len(outbox)-1] {
					t.Fatalf("seq %d not after %d", seq, outbox[len(outbox)-1])
				}
				outbox = append(outbox, seq)
			case 3:
				if len(outbox) > 0 {
					i := len(arg) % len(outbox)
					if err := s.Ack(outbox[i]); err != nil {
						t.Fatal(err)
					}
					outbox = append(outbox[:i:i], outbox[i+1:]...)
				}
			case 4:
				var sec int64
				if len(arg) >= 1 {
					var b [8]byte
					copy(b[:], arg)
					sec = int64(binary.LittleEndian.Uint64(b[:]) % (1 << 34))
				}
				ts := time.Unix(sec, int64(len(prog))).UTC()
				got, err := s.AdvanceWatermark(ts)
				if err != nil {
					t.Fatal(err)
				}
				if ts.After(wm) {
					wm = ts
				}
				if !got.Equal(wm) {
					t.Fatalf("watermark %v, model %v", got, wm)
				}
			case 5:
				if len(arg) == 0 {
					continue
				}
				v := next()
				if err := s.PutMeta(string(arg), v); err != nil {
					t.Fatal(err)
				}
				meta[string(arg)] = bytes.Clone(v)
			case 6:
				if err := s.PutCertificate(CertLicense, arg, time.Unix(int64(len(arg)), 0)); err != nil {
					t.Fatal(err)
				}
				c, err := s.Certificate(CertLicense)
				if err != nil || !bytes.Equal(c.Raw, arg) {
					t.Fatalf("Certificate round trip: %v", err)
				}
			case 7:
				m := MachineRecord{ID: string(arg), Components: []ComponentRecord{{Name: string(next())}}}
				want := MachineRecord{ID: jsonString(m.ID), Components: []ComponentRecord{{Name: jsonString(m.Components[0].Name)}}}
				if err := s.PutMachine(m); err != nil {
					t.Fatal(err)
				}
				got, err := s.Machine()
				if err != nil || got.ID != want.ID || got.Components[0] != want.Components[0] {
					t.Fatalf("Machine round trip: %+v, %v", got, err)
				}
			case 8:
				if err := s.PutValidation(ValidationRecord{Code: string(arg), Detail: string(next())}); err != nil {
					t.Fatal(err)
				}
				if v, err := s.Validation(); err != nil || v.Code != jsonString(string(arg)) {
					t.Fatalf("Validation round trip: %+v, %v", v, err)
				}
			}
		}
		ls, err := s.Leases()
		if err != nil || len(ls) != len(leases) {
			t.Fatalf("Leases = %d, %v; model %d", len(ls), err, len(leases))
		}
		for _, l := range ls {
			if m, ok := leases[l.ID]; !ok || m.App != l.App || m.PID != l.PID || m.StartTime != l.StartTime {
				t.Fatalf("lease %q = %+v, model %+v", l.ID, l, m)
			}
		}
		ob, err := s.Outbox()
		if err != nil || len(ob) != len(outbox) {
			t.Fatalf("Outbox = %d, %v; model %d", len(ob), err, len(outbox))
		}
		for i := range ob {
			if ob[i].Seq != outbox[i] {
				t.Fatalf("outbox[%d] = %d, model %d", i, ob[i].Seq, outbox[i])
			}
		}
		for k, v := range meta {
			if got, err := s.Meta(k); err != nil || !bytes.Equal(got, v) {
				t.Fatalf("Meta(%q) = %q, %v; model %q", k, got, err, v)
			}
		}
	})
}
