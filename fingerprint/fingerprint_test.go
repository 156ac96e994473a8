package fingerprint

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const testApp = "com.example.app"

// serverRoot is a fake Linux root with DMI, physical and virtual disks and
// NICs, and /proc/cpuinfo. See TestRawValuesNeverLeak for its raw values.
const serverRoot = "testdata/server"

func noEnv(string) string { return "" }

func computeServer(t testing.TB) *Result {
	t.Helper()
	r, err := Compute(context.Background(), Options{AppID: testApp, Root: serverRoot, Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func wantHMAC(key, msg string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

func TestComputeServerRoot(t *testing.T) {
	r := computeServer(t)
	if want := wantHMAC("7f3c2a9e5b1d4e6f8a0b1c2d3e4f5a6b", testApp); r.Fingerprint != want {
		t.Errorf("Fingerprint = %s, want ProtectedID construction %s", r.Fingerprint, want)
	}
	if r.IdentitySource != "os machine ID (/etc/machine-id)" {
		t.Errorf("IdentitySource = %q", r.IdentitySource)
	}
	got := map[string]Component{}
	var names []string
	for _, c := range r.Components {
		got[c.Name] = c
		names = append(names, c.Name)
	}
	wantNames := []string{"system-uuid", "baseboard-serial", "cpu", "disk-0", "disk-1", "disk-2", "disk-3", "nic-0", "nic-1", "nic-2"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Fatalf("names = %v, want %v", names, wantNames)
	}
	// Fingerprints are HMAC(appID, kind:normalised raw); check one of each.
	byFP := map[string]Component{}
	for _, c := range r.Components {
		byFP[c.Fingerprint] = c
	}
	for _, w := range []struct{ msg, source string }{
		{"system-uuid:4c4c4544-0051-3910-8057-b7c04f4e4d32", "sysfs /sys/class/dmi/id/product_uuid"},
		{"baseboard-serial:/7X9QN32/CNFCW0097B01TQ/", "sysfs /sys/class/dmi/id/board_serial"},
		{"cpu:vendor=GenuineIntel;model=Intel(R) Xeon(R) E-2176G CPU @ 3.70GHz;family=6;model-id=158;stepping=10;physical-cores=2;packages=1", "/proc/cpuinfo (gopsutil cpu.Info, cpu.Counts)"},
		{"disk:PHBT8123004K512A", "sysfs /sys/block/nvme0n1/device/serial"},
		{"disk:S3Z9NB0K123456X", "udev /run/udev/data/b8:0 ID_SERIAL_SHORT"},
		{"disk:WD-WCC4N7ABCDEF", "sysfs /sys/block/sde/device/vpd_pg80 (SCSI VPD page 0x80)"},
		{"disk:VIRTIO-DISK-7781", "sysfs /sys/block/vda/serial"},
		{"nic:3c:ec:ef:12:34:56", "sysfs /sys/class/net/eno1/address"},
		{"nic:8c:8d:28:aa:bb:cc", "sysfs /sys/class/net/wlp2s0/address"},
		{"nic:00:1b:21:de:ad:01", "sysfs /sys/class/net/eth2/bonding_slave/perm_hwaddr"},
	} {
		c, ok := byFP[wantHMAC(testApp, w.msg)]
		if !ok {
			t.Errorf("no component for %q", w.msg)
			continue
		}
		if c.Source != w.source {
			t.Errorf("%s: source %q, want %q", c.Name, c.Source, w.source)
		}
	}
	skipped := map[string]string{}
	for _, s := range r.Skipped {
		skipped[s.Name] = s.Reason
	}
	for name, want := range map[string]string{
		"disk:sdb":            "USB",
		"disk:sdc":            "iSCSI",
		"disk:sdd":            "no serial number",
		"nic:enp5s0":          "not the permanent address",
		"nic:enp6s0":          "locally administered",
		"nic:enx00e04c680001": "USB network adapter",
	} {
		if !strings.Contains(skipped[name], want) {
			t.Errorf("skipped[%s] = %q, want it to mention %q", name, skipped[name], want)
		}
	}
	// Virtual devices are filtered silently, never components or skips.
	for _, v := range []string{"loop0", "ram0", "zram0", "dm-0", "md0", "nbd0", "sr0", "lo", "docker0", "veth1a2b3c", "wg0", "tap0", "ifb0", "br0", "ib0"} {
		for _, s := range r.Skipped {
			if strings.HasSuffix(s.Name, ":"+v) {
				t.Errorf("virtual device %s reported as skipped: %q", v, s.Reason)
			}
		}
		for _, c := range r.Components {
			if strings.Contains(c.Source, "/"+v+"/") {
				t.Errorf("virtual device %s became component %s", v, c.Name)
			}
		}
	}
	if r.Attributes.Memory != 16318748*1024 {
		t.Errorf("Memory = %d, want MemTotal of the fake root", r.Attributes.Memory)
	}
	if r.Attributes.Platform == "" || r.Attributes.Cores < 1 {
		t.Errorf("Attributes = %+v", r.Attributes)
	}
}

func TestComputeIsDeterministic(t *testing.T) {
	a, b := computeServer(t), computeServer(t)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two calls differ:\n%+v\n%+v", a, b)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatal("JSON differs between calls")
	}
	// Another app sees unrelated values.
	o, err := Compute(context.Background(), Options{AppID: "com.other.vendor", Root: serverRoot, Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if o.Fingerprint == a.Fingerprint {
		t.Error("machine fingerprint is the same for two app IDs")
	}
	for i := range o.Components {
		if o.Components[i].Fingerprint == a.Components[i].Fingerprint {
			t.Errorf("component %s fingerprint is the same for two app IDs", o.Components[i].Name)
		}
	}
}

// rawTestValues are every identifier in testdata/server, in the spellings
// they could leak in.
var rawTestValues = []string{
	"7f3c2a9e5b1d4e6f8a0b1c2d3e4f5a6b",
	"4C4C4544-0051-3910-8057-B7C04F4E4D32", "4c4c4544-0051-3910-8057-b7c04f4e4d32", "4c4c4544005139108057b7c04f4e4d32",
	"7X9QN32", "CNFCW0097B01TQ",
	"S3Z9NB0K123456X", "PHBT8123004K512A", "VIRTIO-DISK-7781", "WCC4N7ABCDEF", "USBSTICK0042", "ISCSILUN0099", "DVDROM0001",
	"3c:ec:ef:12:34:56", "3cecef123456", "8c:8d:28:aa:bb:cc", "8C:8D:28:AA:BB:CC", "8c8d28aabbcc", "00:1b:21:de:ad:01", "001b21dead01",
	"a0:36:9f:11:22:33", "06:42:ac:11:00:02", "00:e0:4c:68:00:01", "00:1b:21:de:ad:99",
	"E-2176G",
}

// assertNoRaw fails if out contains any raw value, case-insensitively.
func assertNoRaw(t *testing.T, what, out string) {
	t.Helper()
	lower := strings.ToLower(out)
	for _, v := range rawTestValues {
		if strings.Contains(lower, strings.ToLower(v)) {
			t.Errorf("%s contains raw value %q", what, v)
		}
	}
}

func TestRawValuesNeverLeak(t *testing.T) {
	r := computeServer(t)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	assertNoRaw(t, "Result JSON", string(b))
	assertNoRaw(t, "Result %+v", strings.ReplaceAll(strings.ReplaceAll(jsonOrPrint(r), "\n", " "), "\t", " "))
	cmp := Compare(r.Components, r.Components)
	cb, _ := json.Marshal(cmp)
	assertNoRaw(t, "Comparison JSON", string(cb))
	// Identity errors say which source failed, never its value.
	for _, id := range []string{"88544b92092430bc5d3fbbffc12a2f04", "short-secret-1"} {
		_, err := Compute(context.Background(), Options{AppID: testApp, Root: serverRoot, Getenv: func(k string) string {
			if k == DefaultIdentityEnv {
				return id
			}
			return ""
		}})
		if err == nil || strings.Contains(err.Error(), id) {
			t.Errorf("identity %q: err = %v (want an error without the value)", id, err)
		}
	}
}

func jsonOrPrint(r *Result) string {
	b, _ := json.MarshalIndent(r, "", "\t")
	return string(b)
}

func TestExplicitIdentity(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "MY_ID" {
				return v
			}
			return ""
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "id")
	if err := os.WriteFile(file, []byte("  pod-7d1c0e1b-0f5e-4d8e-9c3b-2f1e0d9c8b7a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		o       Options
		wantKey string
		wantSrc string
		wantErr string
	}{
		{"env wins over file and OS", Options{IdentityEnv: "MY_ID", IdentityFile: file, Getenv: env(" container-identity-0001 ")},
			"container-identity-0001", "environment MY_ID", ""},
		{"file wins over OS", Options{IdentityFile: file, Getenv: noEnv}, "pod-7d1c0e1b-0f5e-4d8e-9c3b-2f1e0d9c8b7a", "identity file " + file, ""},
		{"default env name", Options{Getenv: func(k string) string {
			if k == DefaultIdentityEnv {
				return "abcdefghijklmnopqrstuvwxyz"
			}
			return ""
		}}, "abcdefghijklmnopqrstuvwxyz", "environment " + DefaultIdentityEnv, ""},
		{"OS machine ID", Options{Getenv: noEnv}, "7f3c2a9e5b1d4e6f8a0b1c2d3e4f5a6b", "os machine ID (/etc/machine-id)", ""},
		{"short env is an error, not a fallback", Options{IdentityEnv: "MY_ID", Getenv: env("abc")}, "", "", "shorter than 16"},
		{"blank env is ignored", Options{IdentityEnv: "MY_ID", Getenv: env("")}, "7f3c2a9e5b1d4e6f8a0b1c2d3e4f5a6b", "os machine ID (/etc/machine-id)", ""},
		{"whitespace env is an error", Options{IdentityEnv: "MY_ID", Getenv: env("   ")}, "", "", "empty"},
		{"repeated char", Options{IdentityEnv: "MY_ID", Getenv: env("xxxxxxxxxxxxxxxxxxxx")}, "", "", "single character"},
		{"image ID as explicit", Options{IdentityEnv: "MY_ID", Getenv: env("88544b92-0924-30bc-5d3f-bbffc12a2f04")}, "", "", "baked into public images"},
		{"missing file", Options{IdentityFile: filepath.Join(dir, "nope"), Getenv: noEnv}, "", "", "not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Root = serverRoot
			id, err := resolveIdentity(tc.o)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrNoMachineID) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrNoMachineID mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.key != tc.wantKey || id.source != tc.wantSrc {
				t.Errorf("got (%q, %q), want (%q, %q)", id.key, id.source, tc.wantKey, tc.wantSrc)
			}
		})
	}
}

func TestOSMachineIDValidation(t *testing.T) {
	cases := []struct {
		content string
		want    string // "" = valid
	}{
		{"7f3c2a9e5b1d4e6f8a0b1c2d3e4f5a6b\n", ""},
		{"7F3C2A9E-5B1D-4E6F-8A0B-1C2D3E4F5A6B", ""}, // Windows/macOS style
		{"", "empty"},
		{"\n", "empty"},
		{"uninitialized\n", "uninitialized"},
		{"00000000000000000000000000000000", "single digit"},
		{"7f3c2a9e5b1d4e6f", "shorter than 32"},
		{"7:blkio:", "not hexadecimal"},
		{"keygen-agent.service", "not hexadecimal"},
		{"88544b92092430bc5d3fbbffc12a2f04", "baked into public images"},
	}
	for _, tc := range cases {
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "etc", "machine-id"), []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Compute(context.Background(), Options{AppID: testApp, Root: root, Getenv: noEnv})
		if tc.want == "" {
			if err != nil || r.Fingerprint != wantHMAC(strings.TrimSpace(tc.content), testApp) {
				t.Errorf("%q: r=%v err=%v", tc.content, r, err)
			}
			continue
		}
		if !errors.Is(err, ErrNoMachineID) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), DefaultIdentityEnv) {
			t.Errorf("%q: err = %v, want ErrNoMachineID with %q and how to configure %s", tc.content, err, tc.want, DefaultIdentityEnv)
		}
	}
	// No machine-id files at all: a minimal container.
	_, err := Compute(context.Background(), Options{AppID: testApp, Root: t.TempDir(), Getenv: noEnv})
	if !errors.Is(err, ErrNoMachineID) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("no files: err = %v", err)
	}
	if _, err := Compute(context.Background(), Options{Root: serverRoot, Getenv: noEnv}); err == nil {
		t.Error("empty AppID accepted")
	}
}

// TestHostMachineIDMatchesProtectedID runs on the real machine: the
// fingerprint must equal machineid.ProtectedID, which Keygen's examples use.
func TestHostMachineIDMatchesProtectedID(t *testing.T) {
	r, err := Compute(context.Background(), Options{AppID: testApp, Getenv: noEnv})
	if errors.Is(err, ErrNoMachineID) {
		t.Skipf("this machine has no usable machine ID: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	want, err := protectedID(testApp)
	if err != nil {
		t.Fatal(err)
	}
	if r.Fingerprint != want {
		t.Errorf("Fingerprint %s != machineid.ProtectedID %s", r.Fingerprint, want)
	}
}

func TestNoDMIAndPermissionReasons(t *testing.T) {
	var c collection
	collectDMI(t.TempDir(), &c)
	if len(c.raws) != 0 || len(c.skipped) != 2 || !strings.Contains(c.skipped[0].Reason, "no DMI") {
		t.Errorf("no DMI: %+v", c)
	}
	err := &fs.PathError{Op: "open", Path: "/x", Err: fs.ErrPermission}
	if got := skipReason("/sys/class/dmi/id/board_serial", err); got != "permission denied: /sys/class/dmi/id/board_serial (needs root)" {
		t.Errorf("skipReason = %q", got)
	}
	// Placeholder DMI values are skipped, not fingerprinted.
	root := t.TempDir()
	dmi := filepath.Join(root, "sys", "class", "dmi", "id")
	if err := os.MkdirAll(dmi, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dmi, "product_uuid"), []byte("03000200-0400-0500-0006-000700080009\n"), 0o644)
	os.WriteFile(filepath.Join(dmi, "board_serial"), []byte("To Be Filled By O.E.M.\n"), 0o644)
	c = collection{}
	collectDMI(root, &c)
	if len(c.raws) != 0 || len(c.skipped) != 2 || !strings.Contains(c.skipped[1].Reason, "placeholder") {
		t.Errorf("placeholders: %+v", c)
	}
}

func TestDeriveCapsAndDedupes(t *testing.T) {
	var c collection
	c.add(NameCPU, "cpu-identity", "cpu src")
	for i := range 25 {
		c.add(kindDisk, "SERIAL"+string(rune('A'+i)), "disk src")
	}
	c.add(kindDisk, "SERIALA", "second path to disk A")
	c.add(kindNIC, "00:11:22:33:44:55", "nic src")
	r := derive(testApp, identity{key: "k", source: "s"}, c, Attributes{})
	if len(r.Components) != MaxComponents {
		t.Fatalf("%d components, want %d", len(r.Components), MaxComponents)
	}
	var over, dup int
	for _, s := range r.Skipped {
		if strings.Contains(s.Reason, "limit of 20") {
			over++
		}
		if strings.Contains(s.Reason, "duplicate") {
			dup++
		}
	}
	if over != 7 || dup != 1 { // 1 cpu + 25 disks + 1 nic = 27 distinct
		t.Errorf("over=%d dup=%d, skipped=%+v", over, dup, r.Skipped)
	}
	if r.Components[0].Name != "cpu" || r.Components[19].Name != "disk-18" {
		t.Errorf("order: first %s last %s", r.Components[0].Name, r.Components[19].Name)
	}
}

func TestCacheComputesOnce(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(root, "etc", "machine-id")
	os.WriteFile(idFile, []byte("7f3c2a9e5b1d4e6f8a0b1c2d3e4f5a6b\n"), 0o644)
	c := NewCache(Options{AppID: testApp, Root: root, Getenv: noEnv})
	ctx := context.Background()
	a, err := c.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(idFile, []byte("0123456789abcdef0123456789abcdef\n"), 0o644)
	b, _ := c.Get(ctx)
	if b.Fingerprint != a.Fingerprint {
		t.Error("Get recomputed")
	}
	b.Components = append(b.Components, Component{Name: "x"})
	if r, _ := c.Get(ctx); len(r.Components) != len(a.Components) {
		t.Error("caller mutation reached the cache")
	}
	f, err := c.Refresh(ctx)
	if err != nil || f.Fingerprint == a.Fingerprint {
		t.Errorf("Refresh: %v, same fingerprint %v", err, f.Fingerprint == a.Fingerprint)
	}
	os.WriteFile(idFile, nil, 0o644)
	if _, err := c.Refresh(ctx); !errors.Is(err, ErrNoMachineID) {
		t.Errorf("Refresh with empty id: %v", err)
	}
	if g, _ := c.Get(ctx); g.Fingerprint != f.Fingerprint {
		t.Error("failed Refresh dropped the cached result")
	}
}

func TestPlaceholder(t *testing.T) {
	for _, v := range []string{"", "  ", "To Be Filled By O.E.M.", "Default string", "0000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "........", "XXXXXXXX", "00:00:00:00:00:00"} {
		if !isPlaceholder(v) {
			t.Errorf("isPlaceholder(%q) = false", v)
		}
	}
	for _, v := range []string{"S3Z9NB0K123456X", "4c4c4544-0051-3910-8057-b7c04f4e4d32", "/7X9QN32/CNFCW0097B01TQ/"} {
		if isPlaceholder(v) {
			t.Errorf("isPlaceholder(%q) = true", v)
		}
	}
}

func TestPhysicalMAC(t *testing.T) {
	for in, want := range map[string]string{
		"3C:EC:EF:12:34:56":       "3c:ec:ef:12:34:56",
		"00:00:00:00:00:00":       "",
		"ff:ff:ff:ff:ff:ff":       "",
		"01:00:5e:00:00:01":       "",
		"02:42:ac:11:00:02":       "",
		"garbage":                 "",
		"00:11:22:33:44:55:66:77": "",
	} {
		if got, _ := physicalMAC(in); got != want {
			t.Errorf("physicalMAC(%q) = %q, want %q", in, got, want)
		}
	}
}
