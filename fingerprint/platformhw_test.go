package fingerprint

import "testing"

const networksetupOut = `
Hardware Port: Ethernet
Device: en0
Ethernet Address: 3c:22:fb:11:22:33

Hardware Port: Wi-Fi
Device: en1
Ethernet Address: 3c:22:fb:44:55:66

Hardware Port: Thunderbolt Bridge
Device: bridge0
Ethernet Address: 36:aa:bb:cc:dd:ee

VLAN Configurations
===================
`

func TestParseHardwarePorts(t *testing.T) {
	p := parseHardwarePorts(networksetupOut)
	if got := p["en1"]; got.Port != "Wi-Fi" || got.MAC != "3c:22:fb:44:55:66" {
		t.Errorf("en1 = %+v", got)
	}
	if got := p["en0"]; got.Port != "Ethernet" || got.MAC != "3c:22:fb:11:22:33" {
		t.Errorf("en0 = %+v", got)
	}
	if _, ok := p["bridge0"]; !ok || len(p) != 3 {
		t.Errorf("ports %+v", p)
	}
	// A private Wi-Fi address (locally administered) is never a component,
	// while the permanent address networksetup reports is.
	if _, why := physicalMAC("3e:22:fb:44:55:66"); why == "" {
		t.Error("private (locally administered) address accepted")
	}
	if mac, why := physicalMAC(p["en1"].MAC); why != "" || mac != "3c:22:fb:44:55:66" {
		t.Errorf("permanent Wi-Fi address refused: %s", why)
	}
}

// TestAppleCPUSameUnderRosetta pins issue 17 item 10: the arm64 build and
// an x86-64 build under Rosetta produce the same CPU component.
func TestAppleCPUSameUnderRosetta(t *testing.T) {
	brand := "Apple M2 Pro"
	// arm64 build: hw.cpufamily / hw.cpusubfamily.
	v1, f1, m1, s1 := appleCPUFields(true, "", "3660830781", "2", "")
	native := cpuIdentity(v1, brand, f1, m1, s1, 10, 1)
	// x86-64 under Rosetta: emulated machdep.cpu values.
	v2, f2, m2, s2 := appleCPUFields(true, "GenuineIntel", "6", "44", "0")
	rosetta := cpuIdentity(v2, brand, f2, m2, s2, 10, 1)
	if native != rosetta {
		t.Fatalf("CPU component differs:\n native  %s\n rosetta %s", native, rosetta)
	}
	// Intel Macs keep their family/model/stepping.
	v, f, m, s := appleCPUFields(false, "GenuineIntel", "6", "158", "10")
	if v != "GenuineIntel" || f != "6" || m != "158" || s != "10" {
		t.Errorf("Intel Mac fields %q %q %q %q", v, f, m, s)
	}
}
