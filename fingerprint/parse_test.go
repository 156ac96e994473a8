package fingerprint

import (
	"encoding/binary"
	"testing"
)

// smbiosStruct builds one SMBIOS structure: formatted area then strings.
func smbiosStruct(typ byte, formatted []byte, strs ...string) []byte {
	b := append([]byte{typ, byte(4 + len(formatted)), 0x01, 0x00}, formatted...)
	if len(strs) == 0 {
		return append(b, 0, 0)
	}
	for _, s := range strs {
		b = append(append(b, s...), 0)
	}
	return append(b, 0)
}

func rawSMBIOS(major, minor byte, table []byte) []byte {
	h := []byte{0, major, minor, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(h[4:], uint32(len(table)))
	return append(h, table...)
}

func sampleSMBIOS() []byte {
	uuid := []byte{0x44, 0x45, 0x4c, 0x4c, 0x51, 0x00, 0x10, 0x39, 0x80, 0x57, 0xb7, 0xc0, 0x4f, 0x4e, 0x4d, 0x32}
	// type 1: manufacturer(1) product(2) version(3) serial(4) at offsets 4..7, UUID at 8..23, wake-up at 24
	t1 := append([]byte{1, 2, 0, 3}, uuid...)
	t1 = append(t1, 6)
	// type 2: manufacturer(1) product(2) version(3) serial(4)
	t2 := []byte{1, 2, 0, 3}
	var table []byte
	table = append(table, smbiosStruct(0, []byte{1, 2, 0, 0}, "BIOS vendor", "1.2.3")...)
	table = append(table, smbiosStruct(1, t1, "Dell Inc.", "PowerEdge T140", "7X9QN32")...)
	table = append(table, smbiosStruct(2, t2, "Dell Inc.", "0MXP5J", "/7X9QN32/CNFCW0097B01TQ/")...)
	table = append(table, smbiosStruct(127, nil)...)
	return table
}

func TestParseSMBIOS(t *testing.T) {
	info, err := parseRawSMBIOS(rawSMBIOS(3, 2, sampleSMBIOS()))
	if err != nil {
		t.Fatal(err)
	}
	// Same text as Linux's product_uuid for this machine.
	if info.systemUUID != "4c4c4544-0051-3910-8057-b7c04f4e4d32" {
		t.Errorf("uuid = %q", info.systemUUID)
	}
	if info.baseboardSerial != "/7X9QN32/CNFCW0097B01TQ/" {
		t.Errorf("baseboard serial = %q", info.baseboardSerial)
	}
	old, _ := parseRawSMBIOS(rawSMBIOS(2, 4, sampleSMBIOS()))
	if old.systemUUID != "44454c4c-5100-1039-8057-b7c04f4e4d32" {
		t.Errorf("pre-2.6 uuid = %q (must keep wire byte order)", old.systemUUID)
	}
	if _, err := parseRawSMBIOS([]byte{1, 2}); err == nil {
		t.Error("short blob accepted")
	}
	zero := append([]byte{1, 2, 0, 3}, make([]byte, 17)...)
	info = parseSMBIOSTable(smbiosStruct(1, zero, "a", "b", "c"), 3, 0)
	if info.systemUUID != "" {
		t.Errorf("all-zero uuid = %q, want none", info.systemUUID)
	}
}

func TestParseStorageDescriptor(t *testing.T) {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[24:], 40)   // serial offset
	binary.LittleEndian.PutUint32(b[28:], 0x11) // NVMe
	copy(b[40:], "  0025_3881_91B4_5236.\x00")
	d, err := parseStorageDescriptor(b)
	if err != nil || d.serial != "0025_3881_91B4_5236." || d.busType != 0x11 || d.removable {
		t.Errorf("got %+v, %v", d, err)
	}
	b[10] = 1
	binary.LittleEndian.PutUint32(b[28:], 7)
	d, _ = parseStorageDescriptor(b)
	if !d.removable || nonLocalBusTypes[d.busType] == "" {
		t.Errorf("USB removable not flagged: %+v", d)
	}
	binary.LittleEndian.PutUint32(b[24:], 0)
	if d, _ := parseStorageDescriptor(b); d.serial != "" {
		t.Errorf("no serial offset gave %q", d.serial)
	}
	if _, err := parseStorageDescriptor(b[:20]); err == nil {
		t.Error("short descriptor accepted")
	}
}

func TestParseUdevAndVPD(t *testing.T) {
	s, k := parseUdevSerial([]byte("S:disk/by-id/x\nE:ID_SERIAL=Model_SER1\nE:ID_SERIAL_SHORT=SER1\n"))
	if s != "SER1" || k != "ID_SERIAL_SHORT" {
		t.Errorf("got %q %q", s, k)
	}
	s, k = parseUdevSerial([]byte("E:ID_SERIAL=Model_SER1\r\nE:ID_SERIAL_SHORT=\n"))
	if s != "Model_SER1" || k != "ID_SERIAL" {
		t.Errorf("fallback got %q %q", s, k)
	}
	if s, _ := parseUdevSerial([]byte("I:123\nG:systemd\n")); s != "" {
		t.Errorf("no serial gave %q", s)
	}
	if got := parseVPD80([]byte("\x00\x80\x00\x05ABCDE")); got != "ABCDE" {
		t.Errorf("vpd = %q", got)
	}
	if got := parseVPD80([]byte("\x00\x83\x00\x05ABCDE")); got != "" {
		t.Errorf("wrong page gave %q", got)
	}
	if got := parseVPD80([]byte("\x00\x80\x00\x05AB\x01")); got != "" {
		t.Errorf("binary gave %q", got)
	}
}

func FuzzParseSMBIOS(f *testing.F) {
	f.Add(rawSMBIOS(3, 2, sampleSMBIOS()))
	f.Add(rawSMBIOS(2, 4, sampleSMBIOS()[:40]))
	f.Add([]byte{0, 3, 0, 0, 255, 255, 255, 255, 1, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := parseRawSMBIOS(b)
		if err == nil && info.systemUUID != "" && len(info.systemUUID) != 36 {
			t.Fatalf("malformed uuid %q", info.systemUUID)
		}
	})
}

func FuzzParseStorageDescriptor(f *testing.F) {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[24:], 40)
	copy(b[40:], "SERIAL\x00")
	f.Add(b)
	f.Add(make([]byte, 36))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseStorageDescriptor(b)
		if err == nil && len(d.serial) > len(b) {
			t.Fatal("serial longer than input")
		}
	})
}

func FuzzParseUdevSerial(f *testing.F) {
	f.Add([]byte("E:ID_SERIAL=Model_SER1\nE:ID_SERIAL_SHORT=SER1\n"))
	f.Add([]byte("E:=\nE:ID_SERIAL\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, k := parseUdevSerial(b)
		if (s == "") != (k == "") {
			t.Fatalf("serial %q with key %q", s, k)
		}
	})
}

func FuzzParseVPD80(f *testing.F) {
	f.Add([]byte("\x00\x80\x00\x05ABCDE"))
	f.Add([]byte("\x00\x80\xff\xffAB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s := parseVPD80(b); len(s) > len(b) {
			t.Fatal("serial longer than input")
		}
	})
}
