package fingerprint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// smbiosInfo is what the fingerprint needs from the SMBIOS tables.
type smbiosInfo struct {
	systemUUID      string // type 1, formatted like Linux's product_uuid
	baseboardSerial string // type 2
}

// parseRawSMBIOS parses the RawSMBIOSData blob returned by Windows'
// GetSystemFirmwareTable('RSMB'): an 8-byte header (calling method, major,
// minor, DMI revision, uint32 length) followed by the structure table.
func parseRawSMBIOS(b []byte) (smbiosInfo, error) {
	if len(b) < 8 {
		return smbiosInfo{}, errors.New("SMBIOS blob shorter than its header")
	}
	major, minor := int(b[1]), int(b[2])
	n := binary.LittleEndian.Uint32(b[4:8])
	table := b[8:]
	if uint64(n) < uint64(len(table)) {
		table = table[:n]
	}
	return parseSMBIOSTable(table, major, minor), nil
}

// parseSMBIOSTable walks SMBIOS structures: each has a formatted area (type,
// length, handle, fields) followed by a string set ending in two NULs.
func parseSMBIOSTable(t []byte, major, minor int) smbiosInfo {
	var info smbiosInfo
	off := 0
	for off+4 <= len(t) {
		typ, l := t[off], int(t[off+1])
		if l < 4 || off+l > len(t) {
			break
		}
		f := t[off : off+l]
		// String set: NUL-terminated strings, then an extra NUL.
		end := off + l
		var strs []string
		for end < len(t) {
			i := strings.IndexByte(string(t[end:]), 0)
			if i < 0 {
				end = len(t)
				break
			}
			if i == 0 {
				end++
				if len(strs) == 0 && end < len(t) && t[end] == 0 {
					end++ // empty string set is two NULs
				}
				break
			}
			strs = append(strs, string(t[end:end+i]))
			end += i + 1
		}
		str := func(idx byte) string {
			if idx == 0 || int(idx) > len(strs) {
				return ""
			}
			return strings.TrimSpace(strs[idx-1])
		}
		switch typ {
		case 1: // System Information
			if l >= 0x19 && info.systemUUID == "" {
				info.systemUUID = formatSMBIOSUUID(f[8:24], major, minor)
			}
		case 2: // Baseboard Information
			if l >= 8 && info.baseboardSerial == "" {
				info.baseboardSerial = str(f[7])
			}
		case 127: // End-of-Table
			return info
		}
		if end <= off {
			break
		}
		off = end
	}
	return info
}

// formatSMBIOSUUID formats the 16 UUID bytes of a type 1 structure. Since
// SMBIOS 2.6 the first three fields are little-endian (as Linux's
// product_uuid and Windows print them). All-zero ("not present") and all-FF
// ("not settable") UUIDs return "".
func formatSMBIOSUUID(u []byte, major, minor int) string {
	if len(u) != 16 {
		return ""
	}
	zero, ff := true, true
	for _, c := range u {
		zero = zero && c == 0
		ff = ff && c == 0xff
	}
	if zero || ff {
		return ""
	}
	b := make([]byte, 16)
	copy(b, u)
	if major > 2 || major == 2 && minor >= 6 {
		b[0], b[1], b[2], b[3] = u[3], u[2], u[1], u[0]
		b[4], b[5] = u[5], u[4]
		b[6], b[7] = u[7], u[6]
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// storageDescriptor is the part of Windows' STORAGE_DEVICE_DESCRIPTOR the
// fingerprint needs.
type storageDescriptor struct {
	serial    string
	busType   uint32
	removable bool
}

// Windows STORAGE_BUS_TYPE values that are not local physical disks.
var nonLocalBusTypes = map[uint32]string{
	0x06: "Fibre Channel (network disk)",
	0x07: "USB (removable)",
	0x09: "iSCSI (network disk)",
	0x0E: "virtual disk",
	0x0F: "file-backed virtual disk",
	0x10: "Storage Spaces virtual disk",
	0x14: "NVMe over Fabrics (network disk)",
}

// parseStorageDescriptor decodes a STORAGE_DEVICE_DESCRIPTOR returned by
// IOCTL_STORAGE_QUERY_PROPERTY (StorageDeviceProperty).
func parseStorageDescriptor(b []byte) (storageDescriptor, error) {
	if len(b) < 36 {
		return storageDescriptor{}, errors.New("storage descriptor too short")
	}
	d := storageDescriptor{
		removable: b[10] != 0,
		busType:   binary.LittleEndian.Uint32(b[28:32]),
	}
	if so := binary.LittleEndian.Uint32(b[24:28]); so != 0 && uint64(so) < uint64(len(b)) {
		s := b[so:]
		if i := strings.IndexByte(string(s), 0); i >= 0 {
			s = s[:i]
		}
		for _, c := range s {
			if c < 0x20 || c > 0x7e {
				return d, nil // not ASCII: no usable serial
			}
		}
		d.serial = strings.TrimSpace(string(s))
	}
	return d, nil
}
