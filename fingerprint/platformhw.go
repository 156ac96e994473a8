package fingerprint

import (
	"bufio"
	"strings"
)

// hardwarePort is one entry of `networksetup -listallhardwareports`.
type hardwarePort struct {
	Port string // "Wi-Fi", "Ethernet", "Thunderbolt Bridge", ...
	MAC  string // the port's permanent "Ethernet Address"
}

// parseHardwarePorts parses `networksetup -listallhardwareports` into a
// map from device (en0, ...) to its port. networksetup reports the
// hardware's own address (IOKit's IOMACAddress), not the private Wi-Fi
// address macOS 15 rotates per network, which is what ifconfig and
// getifaddrs show while a private address is in use.
func parseHardwarePorts(out string) map[string]hardwarePort {
	ports := map[string]hardwarePort{}
	var cur hardwarePort
	var dev string
	flush := func() {
		if dev != "" {
			ports[dev] = cur
		}
		cur, dev = hardwarePort{}, ""
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			if strings.TrimSpace(sc.Text()) == "" {
				flush()
			}
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "Hardware Port":
			flush()
			cur.Port = v
		case "Device":
			dev = v
		case "Ethernet Address":
			cur.MAC = v
		}
	}
	flush()
	return ports
}

// windowsWiFiSkip is why Windows Wi-Fi adapters are not components: with
// "random hardware addresses" Windows gives an adapter a locally
// administered address per network (or rotating daily), and the address
// GetAdaptersAddresses reports is that one, so the component would come and
// go with the network.
const windowsWiFiSkip = "Wi-Fi adapter: Windows may use a random hardware address per network, so its MAC is not stable"

// appleCPUFields returns the vendor, family and model-id the CPU component
// uses on a Mac. An x86-64 build running under Rosetta 2
// (sysctl.proc_translated = 1) reads emulated Intel values from
// machdep.cpu.* and hw.cpufamily, while the arm64 build reads Apple's: the
// same Mac would have two CPU components. On Apple silicon, natively or
// translated, the component is therefore built from what Rosetta does not
// change, the brand string ("Apple M2 Pro"), core and package counts, with
// vendor "Apple" and no family or model numbers. Intel Macs keep the
// machdep.cpu values.
func appleCPUFields(appleSilicon bool, vendor, family, modelID, stepping string) (v, f, m, s string) {
	if appleSilicon {
		return "Apple", "", "", ""
	}
	if vendor == "" {
		vendor = "Apple"
	}
	return vendor, family, modelID, stepping
}
