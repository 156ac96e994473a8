package cache

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// rawCheck validates the page graph of a bbolt file from its bytes, before
// bbolt reads it. bbolt follows page ids without bounds or cycle checks: a
// branch page pointing at itself makes Open, Check and every cursor loop
// forever, and a page id past the end of the file faults. Here every
// reachable page is checked to lie inside the file, to identify itself, and
// to be reached once. Layout per go.etcd.io/bbolt/internal/common (native
// byte order).
//
// Files larger than maxRawCheck are not read; the other checks still apply.
const maxRawCheck = 256 << 20

const (
	pageHeaderSize  = 16
	elemSize        = 16 // branch and leaf elements are both 16 bytes
	flagBranch      = 0x01
	flagLeaf        = 0x02
	flagMeta        = 0x04
	flagFreelist    = 0x10
	flagBucketLeaf  = 0x01
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	metaChecksumOff = 56 // offset of Meta.checksum inside the meta struct
	noFreelist      = ^uint64(0)
)

var ne = binary.NativeEndian

type rawMeta struct {
	pageSize                  uint32
	root, freelist, hwm, txid uint64
}

func parseMeta(b []byte) (rawMeta, bool) {
	if len(b) < pageHeaderSize+metaChecksumOff+8 {
		return rawMeta{}, false
	}
	if ne.Uint16(b[8:])&flagMeta == 0 {
		return rawMeta{}, false
	}
	m := b[pageHeaderSize:]
	h := fnv.New64a()
	_, _ = h.Write(m[:metaChecksumOff])
	if ne.Uint32(m[0:]) != boltMagic || ne.Uint32(m[4:]) != boltVersion || h.Sum64() != ne.Uint64(m[metaChecksumOff:]) {
		return rawMeta{}, false
	}
	return rawMeta{pageSize: ne.Uint32(m[8:]), root: ne.Uint64(m[16:]), freelist: ne.Uint64(m[32:]),
		hwm: ne.Uint64(m[40:]), txid: ne.Uint64(m[48:])}, true
}

// rawCheckFile returns a description of the damage, or "" if the page graph
// is sound (or the file too large to check).
func rawCheckFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if st.Size() > maxRawCheck {
		return "", nil
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return "", err
	}
	return rawCheck(data), nil
}

func rawCheck(data []byte) string {
	m0, ok0 := parseMeta(data)
	var m1 rawMeta
	ok1 := false
	if ok0 && m0.pageSize >= 1024 && int64(m0.pageSize) <= int64(len(data)) {
		m1, ok1 = parseMeta(data[m0.pageSize:])
	} else if len(data) > 4096 {
		m1, ok1 = parseMeta(data[4096:])
	}
	var m rawMeta
	switch {
	case ok0 && ok1:
		m = m0
		if m1.txid > m0.txid {
			m = m1
		}
	case ok0:
		m = m0
	case ok1:
		m = m1
	default:
		return "no valid meta page"
	}
	ps := uint64(m.pageSize)
	if ps < 1024 || ps > 1<<20 || ps&(ps-1) != 0 {
		return fmt.Sprintf("bad page size %d", ps)
	}
	if m.hwm < 3 || m.hwm > uint64(len(data))/ps {
		return fmt.Sprintf("high water mark %d pages beyond file of %d bytes", m.hwm, len(data))
	}
	if m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.hwm) {
		return fmt.Sprintf("freelist page %d out of range", m.freelist)
	}
	c := &rawChecker{data: data, ps: ps, hwm: m.hwm, seen: make(map[uint64]bool)}
	if err := c.page(m.root, 0); err != nil {
		return err.Error()
	}
	return ""
}

type rawChecker struct {
	data    []byte
	ps, hwm uint64
	seen    map[uint64]bool
}

func (c *rawChecker) page(id uint64, depth int) error {
	if depth > 64 {
		return fmt.Errorf("page %d: tree too deep", id)
	}
	if id < 2 || id >= c.hwm {
		return fmt.Errorf("page %d: out of range (high water mark %d)", id, c.hwm)
	}
	off := id * c.ps
	hdr := c.data[off : off+pageHeaderSize]
	if got := ne.Uint64(hdr); got != id {
		return fmt.Errorf("page %d: identifies as %d", id, got)
	}
	overflow := uint64(ne.Uint32(hdr[12:]))
	if overflow >= c.hwm-id {
		return fmt.Errorf("page %d: overflow %d past high water mark", id, overflow)
	}
	for i := id; i <= id+overflow; i++ {
		if c.seen[i] {
			return fmt.Errorf("page %d: reached twice", i)
		}
		c.seen[i] = true
	}
	return c.elements(id, c.data[off:off+(overflow+1)*c.ps], depth)
}

// elements checks one page's (or inline page's) element table.
func (c *rawChecker) elements(id uint64, p []byte, depth int) error {
	flags := ne.Uint16(p[8:])
	count := uint64(ne.Uint16(p[10:]))
	if pageHeaderSize+count*elemSize > uint64(len(p)) {
		return fmt.Errorf("page %d: %d elements overflow the page", id, count)
	}
	switch flags {
	case flagBranch, flagLeaf:
	default:
		return fmt.Errorf("page %d: unexpected page type %#x", id, flags)
	}
	if flags == flagBranch && count == 0 {
		return fmt.Errorf("page %d: empty branch page", id)
	}
	for i := range count {
		e := pageHeaderSize + i*elemSize
		el := p[e : e+elemSize]
		if flags == flagBranch {
			pos, ksize := uint64(ne.Uint32(el[0:])), uint64(ne.Uint32(el[4:]))
			if e+pos+ksize > uint64(len(p)) {
				return fmt.Errorf("page %d: branch key %d out of bounds", id, i)
			}
			if err := c.page(ne.Uint64(el[8:]), depth+1); err != nil {
				return err
			}
			continue
		}
		eflags := ne.Uint32(el[0:])
		pos, ksize, vsize := uint64(ne.Uint32(el[4:])), uint64(ne.Uint32(el[8:])), uint64(ne.Uint32(el[12:]))
		if e+pos+ksize+vsize > uint64(len(p)) {
			return fmt.Errorf("page %d: leaf element %d out of bounds", id, i)
		}
		if eflags&flagBucketLeaf == 0 {
			continue
		}
		v := p[e+pos+ksize : e+pos+ksize+vsize]
		if len(v) < 16 {
			return fmt.Errorf("page %d: bucket header %d too short", id, i)
		}
		if root := ne.Uint64(v); root != 0 {
			if err := c.page(root, depth+1); err != nil {
				return err
			}
			continue
		}
		inline := v[16:]
		if len(inline) < pageHeaderSize || depth > 64 {
			return fmt.Errorf("page %d: inline bucket %d malformed", id, i)
		}
		if ne.Uint16(inline[8:]) != flagLeaf {
			return fmt.Errorf("page %d: inline bucket %d is not a leaf", id, i)
		}
		if err := c.elements(id, inline, depth+1); err != nil {
			return err
		}
	}
	return nil
}
