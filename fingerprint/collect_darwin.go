package fingerprint

import (
	"context"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

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
	cores, _ := strconv.Atoi(num("hw.physicalcpu_max", "hw.physicalcpu"))
	packages, _ := strconv.Atoi(num("hw.packages"))
	v, f, m, st := appleCPUFields(appleSilicon(), vendor, num("machdep.cpu.family", "hw.cpufamily"),
		num("machdep.cpu.model", "hw.cpusubfamily"), num("machdep.cpu.stepping"))
	c.add(NameCPU, cpuIdentity(v, brand, f, m, st, cores, packages), "sysctl machdep.cpu.brand_string, hw.*")
}

// appleSilicon reports an arm64 Mac, whether this build is arm64 or runs
// under Rosetta (sysctl.proc_translated = 1; the sysctl is absent on Intel
// Macs).
func appleSilicon() bool {
	if runtime.GOARCH == "arm64" {
		return true
	}
	t, err := unix.SysctlUint32("sysctl.proc_translated")
	return err == nil && t == 1
}

// hardwarePorts runs `networksetup -listallhardwareports` (nil on failure).
func hardwarePorts(ctx context.Context) map[string]hardwarePort {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/sbin/networksetup", "-listallhardwareports").Output()
	if err != nil {
		return nil
	}
	return parseHardwarePorts(string(out))
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
	ports := hardwarePorts(ctx)
	for _, in := range ifs {
		if !strings.HasPrefix(in.Name, "en") || slices.Contains(in.Flags, "loopback") || in.HardwareAddr == "" {
			continue
		}
		addr := in.HardwareAddr
		if hp, ok := ports[in.Name]; ok && hp.MAC != "" {
			addr = hp.MAC // the permanent address, not a private Wi-Fi one
		}
		mac, why := physicalMAC(addr)
		if why != "" {
			c.skip(kindNIC+":"+in.Name, "%s", why)
			continue
		}
		c.add(kindNIC, mac, "gopsutil net.Interfaces "+in.Name)
	}
}
