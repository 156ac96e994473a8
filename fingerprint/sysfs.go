package fingerprint

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// This file reads Linux sysfs/DMI/udev under a root directory. It has no
// build tag so the parsers and filters are tested on fake roots everywhere;
// only collect_linux.go calls it on the real "/".

// sysPath joins root and an absolute system path.
func sysPath(root, p string) string { return filepath.Join(root, filepath.FromSlash(p)) }

// readAttr reads a one-line sysfs attribute, trimmed.
func readAttr(root, p string) (string, error) {
	b, err := os.ReadFile(sysPath(root, p))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func exists(root, p string) bool {
	_, err := os.Lstat(sysPath(root, p))
	return err == nil
}

// resolved returns the symlink-resolved system path of p (best effort: the
// link text when the target does not resolve), used to detect USB, virtual
// and network-attached devices.
func resolved(root, p string) string {
	full := sysPath(root, p)
	if r, err := filepath.EvalSymlinks(full); err == nil {
		return filepath.ToSlash(r)
	}
	if l, err := os.Readlink(full); err == nil {
		return filepath.ToSlash(l)
	}
	return ""
}

// skipReason phrases a read failure for Skipped without the value.
func skipReason(p string, err error) string {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return "permission denied: " + p + " (needs root)"
	case errors.Is(err, fs.ErrNotExist):
		return "not present: " + p
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + " " + p + ": " + pe.Err.Error()
	}
	return p + ": " + err.Error()
}

// collectDMI reads the system UUID and the baseboard serial. Both files are
// readable by root only on most distributions.
func collectDMI(root string, c *collection) {
	for _, f := range []struct{ name, path string }{
		{NameSystemUUID, "/sys/class/dmi/id/product_uuid"},
		{NameBaseboardSerial, "/sys/class/dmi/id/board_serial"},
	} {
		v, err := readAttr(root, f.path)
		switch {
		case err != nil && errors.Is(err, fs.ErrNotExist) && !exists(root, "/sys/class/dmi/id"):
			c.skip(f.name, "not present: /sys/class/dmi/id (no DMI/SMBIOS: container, ARM board or VM without firmware tables)")
		case err != nil:
			c.skip(f.name, "%s", skipReason(f.path, err))
		case isPlaceholder(v):
			c.skip(f.name, "%s holds a firmware placeholder, not a unique value", f.path)
		default:
			c.add(f.name, v, "sysfs "+f.path)
		}
	}
}

// virtualDiskPrefixes are block devices that are never physical disks:
// loop, RAM, compressed RAM, device-mapper, software RAID, network block
// devices, optical and floppy drives, and other kernel-made devices.
var virtualDiskPrefixes = []string{"loop", "ram", "zram", "dm-", "md", "nbd", "rbd", "sr", "fd", "drbd", "bcache", "zd", "nullb", "pmem"}

// collectDisks finds physical whole disks under /sys/block (partitions live
// below their disk there, so they are never listed) and reads their serials.
func collectDisks(root string, c *collection) {
	entries, err := os.ReadDir(sysPath(root, "/sys/block"))
	if err != nil {
		c.skip(kindDisk, "%s", skipReason("/sys/block", err))
		return
	}
	for _, e := range entries {
		name := e.Name()
		if slices.ContainsFunc(virtualDiskPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		dir := "/sys/block/" + name
		if !exists(root, dir+"/device") {
			continue // no backing hardware: a virtual block device
		}
		skipName := kindDisk + ":" + name
		path := resolved(root, dir) + " " + resolved(root, dir+"/device")
		switch {
		case strings.Contains(path, "/usb"):
			c.skip(skipName, "USB-attached disk (removable; would make the fingerprint depend on what is plugged in)")
			continue
		case strings.Contains(path, "/session") || strings.Contains(path, "iscsi"):
			c.skip(skipName, "network disk (iSCSI)")
			continue
		case nvmeOverFabrics(root, dir):
			c.skip(skipName, "network disk (NVMe over fabrics)")
			continue
		}
		if r, err := readAttr(root, dir+"/removable"); err == nil && r == "1" {
			c.skip(skipName, "removable media")
			continue
		}
		serial, src, why := diskSerial(root, name)
		switch {
		case serial == "":
			c.skip(skipName, "%s", why)
		case isPlaceholder(serial):
			c.skip(skipName, "%s holds a placeholder, not a unique serial", src)
		default:
			c.add(kindDisk, serial, src)
		}
	}
}

// nvmeOverFabrics reports an NVMe namespace whose controller uses a network
// transport (tcp, rdma, fc) rather than PCIe.
func nvmeOverFabrics(root, dir string) bool {
	if !strings.HasPrefix(filepath.Base(dir), "nvme") {
		return false
	}
	files, _ := filepath.Glob(sysPath(root, dir+"/device/transport"))
	more, _ := filepath.Glob(sysPath(root, dir+"/device/nvme*/transport"))
	for _, f := range append(files, more...) {
		if b, err := os.ReadFile(f); err == nil {
			if t := strings.TrimSpace(string(b)); t != "pcie" && t != "" {
				return true
			}
		}
	}
	return false
}

// diskSerial tries, in order: the device's serial attribute (NVMe, some
// SCSI), the block-level serial (virtio), SCSI VPD page 0x80, and the udev
// database entry for the device number. why explains an empty result.
func diskSerial(root, name string) (serial, source, why string) {
	dir := "/sys/block/" + name
	var denied []string
	for _, p := range []string{dir + "/device/serial", dir + "/serial"} {
		v, err := readAttr(root, p)
		if err == nil && v != "" {
			return v, "sysfs " + p, ""
		}
		if errors.Is(err, fs.ErrPermission) {
			denied = append(denied, p)
		}
	}
	p := dir + "/device/vpd_pg80"
	if b, err := os.ReadFile(sysPath(root, p)); err == nil {
		if v := parseVPD80(b); v != "" {
			return v, "sysfs " + p + " (SCSI VPD page 0x80)", ""
		}
	} else if errors.Is(err, fs.ErrPermission) {
		denied = append(denied, p)
	}
	if devno, err := readAttr(root, dir+"/dev"); err == nil && devno != "" {
		p := "/run/udev/data/b" + devno
		b, err := os.ReadFile(sysPath(root, p))
		if err == nil {
			if v, key := parseUdevSerial(b); v != "" {
				return v, "udev " + p + " " + key, ""
			}
		} else if errors.Is(err, fs.ErrPermission) {
			denied = append(denied, p)
		}
	}
	if len(denied) > 0 {
		return "", "", "permission denied: " + strings.Join(denied, ", ") + " (needs root)"
	}
	return "", "", "no serial number exposed (checked device/serial, serial, device/vpd_pg80 and the udev database)"
}

// parseVPD80 extracts the unit serial number from a SCSI VPD page 0x80
// (byte 1 = page code, bytes 2-3 = big-endian length, then ASCII).
func parseVPD80(b []byte) string {
	if len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(b[2])<<8 | int(b[3])
	if n > len(b)-4 {
		n = len(b) - 4
	}
	s := bytes.TrimRight(b[4:4+n], "\x00")
	for _, ch := range s {
		if ch < 0x20 || ch > 0x7e {
			return ""
		}
	}
	return strings.TrimSpace(string(s))
}

// parseUdevSerial reads a udev database file (lines "E:KEY=VALUE") and
// returns ID_SERIAL_SHORT, else ID_SERIAL, with the key it used.
func parseUdevSerial(b []byte) (serial, key string) {
	var full string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\r\n")
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "E:"), "=")
		if !ok || !strings.HasPrefix(line, "E:") {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "ID_SERIAL_SHORT":
			if v != "" {
				return v, k
			}
		case "ID_SERIAL":
			full = v
		}
	}
	if full != "" {
		return full, "ID_SERIAL"
	}
	return "", ""
}

// virtualNICPrefixes are interface names that are never physical NICs even
// when a driver backs them.
var virtualNICPrefixes = []string{"lo", "veth", "docker", "br-", "virbr", "vnet", "tun", "tap", "wg", "ifb", "dummy",
	"bond", "team", "vxlan", "flannel", "cni", "cali", "kube", "lxc", "lxd", "zt", "tailscale", "vmnet", "vboxnet",
	"macvtap", "macvlan", "ipvlan", "gre", "sit", "ip6tnl", "erspan", "nlmon", "genev"}

// collectNICs finds physical Ethernet/Wi-Fi interfaces under /sys/class/net
// and reads their permanent MAC addresses.
func collectNICs(root string, c *collection) {
	entries, err := os.ReadDir(sysPath(root, "/sys/class/net"))
	if err != nil {
		c.skip(kindNIC, "%s", skipReason("/sys/class/net", err))
		return
	}
	for _, e := range entries {
		name := e.Name()
		if slices.ContainsFunc(virtualNICPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		dir := "/sys/class/net/" + name
		if !exists(root, dir+"/device") || exists(root, dir+"/bridge") || exists(root, dir+"/tun_flags") || exists(root, dir+"/wireguard") {
			continue // virtual, bridge, tun/tap or WireGuard
		}
		if t, err := readAttr(root, dir+"/type"); err == nil && t != "1" {
			continue // not ARPHRD_ETHER (Ethernet and Wi-Fi are 1)
		}
		skipName := kindNIC + ":" + name
		if path := resolved(root, dir) + " " + resolved(root, dir+"/device"); strings.Contains(path, "/usb") {
			c.skip(skipName, "USB network adapter (docks and tethering come and go)")
			continue
		}
		p := dir + "/bonding_slave/perm_hwaddr" // a bond member's own address; "address" is the bond's
		v, err := readAttr(root, p)
		if err != nil {
			p = dir + "/address"
			if at, err := readAttr(root, dir+"/addr_assign_type"); err == nil && at != "0" {
				c.skip(skipName, "%s is not the permanent address (addr_assign_type %s: random, stolen or set)", p, at)
				continue
			}
			v, err = readAttr(root, p)
		}
		if err != nil {
			c.skip(skipName, "%s", skipReason(p, err))
			continue
		}
		mac, why := physicalMAC(v)
		if why != "" {
			c.skip(skipName, "%s: %s", p, why)
			continue
		}
		c.add(kindNIC, mac, "sysfs "+p)
	}
}

// physicalMAC parses a MAC and rejects those that cannot identify hardware:
// zero, broadcast, multicast and locally administered addresses (set by
// software: VMs, randomisation, containers). why is "" when usable.
func physicalMAC(s string) (mac, why string) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return "", "not an EUI-48 MAC address"
	}
	switch {
	case bytes.Equal(hw, make([]byte, 6)):
		return "", "all-zero MAC address"
	case hw[0]&0x01 != 0:
		return "", "multicast or broadcast MAC address"
	case hw[0]&0x02 != 0:
		return "", "locally administered MAC address (assigned by software: VM, container or randomisation)"
	}
	return hw.String(), ""
}
