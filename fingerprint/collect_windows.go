package fingerprint

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/denisbrodbeck/machineid"
	"github.com/shirou/gopsutil/v4/cpu"
	"golang.org/x/sys/windows"
)

// osMachineID is machineid.ID(): the MachineGuid registry value.
func osMachineID(Options) (raw, source string, err error) {
	raw, err = machineid.ID()
	return raw, `os machine ID (registry HKLM\SOFTWARE\Microsoft\Cryptography\MachineGuid)`, err
}

func collect(ctx context.Context, o Options) collection {
	var c collection
	collectSMBIOS(&c)
	collectCPUWindows(ctx, &c)
	collectDisksWindows(&c)
	collectNICsWindows(&c)
	return c
}

var (
	modkernel32                        = windows.NewLazySystemDLL("kernel32.dll")
	procGetSystemFirmwareTable         = modkernel32.NewProc("GetSystemFirmwareTable")
	rsmbProvider               uintptr = 'R'<<24 | 'S'<<16 | 'M'<<8 | 'B'
)

// readRawSMBIOS calls GetSystemFirmwareTable('RSMB', 0, ...) twice: once
// for the size, once for the data. No privilege is needed.
func readRawSMBIOS() ([]byte, error) {
	if err := procGetSystemFirmwareTable.Find(); err != nil {
		return nil, err
	}
	n, _, err := procGetSystemFirmwareTable.Call(rsmbProvider, 0, 0, 0)
	if n == 0 {
		return nil, fmt.Errorf("GetSystemFirmwareTable(RSMB): %w", err)
	}
	buf := make([]byte, n)
	m, _, err := procGetSystemFirmwareTable.Call(rsmbProvider, 0, uintptr(unsafe.Pointer(&buf[0])), n)
	if m == 0 || m > n {
		return nil, fmt.Errorf("GetSystemFirmwareTable(RSMB): %w", err)
	}
	return buf[:m], nil
}

func collectSMBIOS(c *collection) {
	raw, err := readRawSMBIOS()
	var info smbiosInfo
	if err == nil {
		info, err = parseRawSMBIOS(raw)
	}
	if err != nil {
		c.skip(NameSystemUUID, "SMBIOS: %v", err)
		c.skip(NameBaseboardSerial, "SMBIOS: %v", err)
		return
	}
	const src = "SMBIOS (GetSystemFirmwareTable RSMB)"
	if isPlaceholder(info.systemUUID) {
		c.skip(NameSystemUUID, "SMBIOS type 1 UUID is absent or a placeholder")
	} else {
		c.add(NameSystemUUID, info.systemUUID, src+" type 1 UUID")
	}
	if isPlaceholder(info.baseboardSerial) {
		c.skip(NameBaseboardSerial, "SMBIOS type 2 serial is absent or a placeholder")
	} else {
		c.add(NameBaseboardSerial, info.baseboardSerial, src+" type 2 serial")
	}
}

// collectCPUWindows uses gopsutil (registry, GetLogicalProcessorInformationEx
// and SMBIOS type 4). It is optional: it fails outright under Wine.
func collectCPUWindows(ctx context.Context, c *collection) {
	infos, err := cpu.InfoWithContext(ctx)
	if err == nil && len(infos) == 0 {
		err = errors.New("no processor listed")
	}
	if err != nil {
		c.skip(NameCPU, "gopsutil cpu.Info: %v", err)
		return
	}
	cores, err := cpu.CountsWithContext(ctx, false)
	if err != nil {
		cores = 0
	}
	in := infos[0]
	c.add(NameCPU, cpuIdentity(in.VendorID, in.ModelName, in.Family, in.Model, strconv.Itoa(int(in.Stepping)), cores, len(infos)),
		"registry and processor topology (gopsutil cpu.Info, cpu.Counts)")
}

const ioctlStorageQueryProperty = 0x002D1400

// storagePropertyQuery is STORAGE_PROPERTY_QUERY for StorageDeviceProperty.
type storagePropertyQuery struct {
	PropertyID           uint32
	QueryType            uint32
	AdditionalParameters [4]byte
}

// collectDisksWindows asks each \\.\PhysicalDriveN for its device
// descriptor. Opening with no access rights is enough for this query, so it
// works without elevation.
func collectDisksWindows(c *collection) {
	for i := range 32 {
		dev := `\\.\PhysicalDrive` + strconv.Itoa(i)
		p, _ := windows.UTF16PtrFromString(dev)
		h, err := windows.CreateFile(p, 0, windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE, nil, windows.OPEN_EXISTING, 0, 0)
		if err != nil {
			if !errors.Is(err, windows.ERROR_FILE_NOT_FOUND) && !errors.Is(err, windows.ERROR_PATH_NOT_FOUND) {
				c.skip(kindDisk+":PhysicalDrive"+strconv.Itoa(i), "open %s: %v", dev, err)
			}
			continue
		}
		q := storagePropertyQuery{}
		buf := make([]byte, 1024)
		var n uint32
		err = windows.DeviceIoControl(h, ioctlStorageQueryProperty, (*byte)(unsafe.Pointer(&q)), uint32(unsafe.Sizeof(q)),
			&buf[0], uint32(len(buf)), &n, nil)
		windows.CloseHandle(h)
		name := kindDisk + ":PhysicalDrive" + strconv.Itoa(i)
		if err != nil {
			c.skip(name, "IOCTL_STORAGE_QUERY_PROPERTY on %s: %v", dev, err)
			continue
		}
		d, err := parseStorageDescriptor(buf[:n])
		switch {
		case err != nil:
			c.skip(name, "%s: %v", dev, err)
		case nonLocalBusTypes[d.busType] != "":
			c.skip(name, "%s", nonLocalBusTypes[d.busType])
		case d.removable:
			c.skip(name, "removable media")
		case isPlaceholder(d.serial):
			c.skip(name, "%s reports no serial number", dev)
		default:
			c.add(kindDisk, d.serial, "IOCTL_STORAGE_QUERY_PROPERTY "+dev)
		}
	}
}

// virtualAdapterWords mark virtual adapters by their driver description.
var virtualAdapterWords = []string{"virtual", "hyper-v", "vmware", "virtualbox", "tap-windows", "wireguard", "vpn",
	"loopback", "npcap", "bluetooth", "miniport", "tunnel", "teredo", "isatap", "zerotier", "tailscale", "usb"}

// collectNICsWindows lists adapters with GetAdaptersAddresses (it gives the
// interface type and driver description that the Go and gopsutil interface
// lists lack) and keeps physical Ethernet ones (Wi-Fi: see windowsWiFiSkip).
func collectNICsWindows(c *collection) {
	size := uint32(16 << 10)
	var first *windows.IpAdapterAddresses
	for range 3 {
		buf := make([]byte, size)
		first = (*windows.IpAdapterAddresses)(unsafe.Pointer(&buf[0]))
		err := windows.GetAdaptersAddresses(windows.AF_UNSPEC, windows.GAA_FLAG_INCLUDE_ALL_INTERFACES, 0, first, &size)
		if err == nil {
			break
		}
		if !errors.Is(err, windows.ERROR_BUFFER_OVERFLOW) {
			c.skip(kindNIC, "GetAdaptersAddresses: %v", err)
			return
		}
		first = nil
	}
	for a := first; a != nil; a = a.Next {
		if a.IfType != windows.IF_TYPE_ETHERNET_CSMACD && a.IfType != windows.IF_TYPE_IEEE80211 {
			continue
		}
		desc := windows.UTF16PtrToString(a.Description)
		lower := strings.ToLower(desc)
		name := kindNIC + ":" + windows.UTF16PtrToString(a.FriendlyName)
		virtual := false
		for _, w := range virtualAdapterWords {
			if strings.Contains(lower, w) {
				virtual = true
				break
			}
		}
		if virtual {
			continue
		}
		if a.IfType == windows.IF_TYPE_IEEE80211 {
			c.skip(name, "%s", windowsWiFiSkip)
			continue
		}
		if a.PhysicalAddressLength != 6 {
			continue
		}
		hw := a.PhysicalAddress[:6]
		mac, why := physicalMAC(fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", hw[0], hw[1], hw[2], hw[3], hw[4], hw[5]))
		if why != "" {
			c.skip(name, "%s", why)
			continue
		}
		c.add(kindNIC, mac, "GetAdaptersAddresses adapter "+strconv.Quote(desc))
	}
}
