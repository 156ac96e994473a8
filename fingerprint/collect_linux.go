package fingerprint

import (
	"context"
	"errors"
	"os"
	"strconv"

	"github.com/denisbrodbeck/machineid"
	"github.com/shirou/gopsutil/v4/cpu"
)

// machineIDFiles are the files machineid reads on Linux, in its order.
var machineIDFiles = []string{"/var/lib/dbus/machine-id", "/etc/machine-id"}

// osMachineID returns the raw OS machine ID. On the real root it is
// machineid.ID(); on a fake root (tests) the same files are read, in the
// same order, under Options.Root.
func osMachineID(o Options) (raw, source string, err error) {
	root := o.root()
	if root == "/" {
		source = "os machine ID (/etc/machine-id)"
		if _, err := os.Stat(machineIDFiles[0]); err == nil {
			source = "os machine ID (" + machineIDFiles[0] + ")"
		}
		raw, err = machineid.ID()
		return raw, source, err
	}
	var first error
	for _, p := range machineIDFiles {
		b, err := os.ReadFile(sysPath(root, p))
		if err == nil {
			return string(b), "os machine ID (" + p + ")", nil
		}
		if first == nil {
			first = err
		}
	}
	return "", "os machine ID (" + machineIDFiles[0] + ", " + machineIDFiles[1] + ")", first
}

// collect reads every Linux component source under Options.Root.
func collect(ctx context.Context, o Options) collection {
	var c collection
	root := o.root()
	collectDMI(root, &c)
	collectCPU(ctx, o, &c)
	collectDisks(root, &c)
	collectNICs(root, &c)
	return c
}

// collectCPU uses gopsutil (pointed at Root/proc and Root/sys) for the CPU
// identity of the first package.
func collectCPU(ctx context.Context, o Options, c *collection) {
	gctx := gopsutilContext(ctx, o)
	infos, err := cpu.InfoWithContext(gctx)
	if err == nil && len(infos) == 0 {
		err = errors.New("no processor listed")
	}
	if err != nil {
		c.skip(NameCPU, "/proc/cpuinfo: %v", err)
		return
	}
	cores, err := cpu.CountsWithContext(gctx, false)
	if err != nil {
		cores = 0
	}
	packages := map[string]bool{}
	for _, in := range infos {
		packages[in.PhysicalID] = true
	}
	in := infos[0]
	if in.VendorID == "" && in.ModelName == "" {
		c.skip(NameCPU, "/proc/cpuinfo lists no vendor or model name")
		return
	}
	c.add(NameCPU, cpuIdentity(in.VendorID, in.ModelName, in.Family, in.Model, strconv.Itoa(int(in.Stepping)), cores, len(packages)),
		"/proc/cpuinfo (gopsutil cpu.Info, cpu.Counts)")
}
