package fingerprint

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/denisbrodbeck/machineid"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/net"
	"golang.org/x/sys/unix"
)

// osMachineID is machineid.ID(): IOPlatformUUID, read by running ioreg.
func osMachineID(Options) (raw, source string, err error) {
	raw, err = machineid.ID()
	return raw, "os machine ID (IOPlatformUUID via ioreg)", err
}

func collect(ctx context.Context, o Options) collection {
	var c collection
	if id, err := host.HostIDWithContext(ctx); err != nil {
		c.skip(NameSystemUUID, "IOPlatformUUID (gopsutil host.HostID): %v", err)
	} else if isPlaceholder(id) {
		c.skip(NameSystemUUID, "IOPlatformUUID is empty or a placeholder")
	} else {
		c.add(NameSystemUUID, id, "IOPlatformUUID (gopsutil host.HostID, ioreg)")
	}
	c.skip(NameBaseboardSerial, "IOPlatformSerialNumber needs IOKit (cgo) and no supported library exposes it; not collected")
	collectCPUDarwin(&c)
	c.skip(kindDisk, "disk serials need IOKit or system_profiler (seconds per call); not collected on macOS")
	collectNICsDarwin(ctx, &c)
	return c
}

// collectCPUDarwin reads the CPU identity with sysctl(3). Intel Macs have
// machdep.cpu.{vendor,family,model,stepping}; Apple silicon has
// hw.cpufamily and hw.cpusubfamily instead.
func collectCPUDarwin(c *collection) {
	brand, err := unix.Sysctl("machdep.cpu.brand_string")
	if err != nil || strings.TrimSpace(brand) == "" {
		c.skip(NameCPU, "sysctl machdep.cpu.brand_string: %v", err)
		return
	}
	num := func(names ...string) string {
		for _, n := range names {
			if v, err := unix.SysctlUint32(n); err == nil {
				return strconv.FormatUint(uint64(v), 10)
			}
		}
		return ""
	}
	vendor, _ := unix.Sysctl("machdep.cpu.vendor")
	if vendor == "" {
		vendor = "Apple"
	}
	cores, _ := strconv.Atoi(num("hw.physicalcpu_max", "hw.physicalcpu"))
	packages, _ := strconv.Atoi(num("hw.packages"))
	c.add(NameCPU, cpuIdentity(vendor, brand, num("machdep.cpu.family", "hw.cpufamily"), num("machdep.cpu.model", "hw.cpusubfamily"),
		num("machdep.cpu.stepping"), cores, packages), "sysctl machdep.cpu.*, hw.*")
}

// collectNICsDarwin keeps en* interfaces (built-in and PCIe Ethernet and
// Wi-Fi); bridge, utun, awdl, llw, anpi, ap and others are virtual.
func collectNICsDarwin(ctx context.Context, c *collection) {
	ifs, err := net.InterfacesWithContext(ctx)
	if err != nil {
		c.skip(kindNIC, "gopsutil net.Interfaces: %v", err)
		return
	}
	slices.SortFunc(ifs, func(a, b net.InterfaceStat) int { return strings.Compare(a.Name, b.Name) })
	for _, in := range ifs {
		if !strings.HasPrefix(in.Name, "en") || slices.Contains(in.Flags, "loopback") || in.HardwareAddr == "" {
			continue
		}
		mac, why := physicalMAC(in.HardwareAddr)
		if why != "" {
			c.skip(kindNIC+":"+in.Name, "%s", why)
			continue
		}
		c.add(kindNIC, mac, "gopsutil net.Interfaces "+in.Name)
	}
}
