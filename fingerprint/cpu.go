package fingerprint

import (
	"strconv"
	"strings"
)

// cpuIdentity builds the raw CPU component value. It includes what stays the
// same for the life of the processor (vendor, model name, family, model,
// stepping, physical cores, packages) and leaves out what changes with
// updates or load (microcode, frequency, flags).
func cpuIdentity(vendor, model, family, modelID, stepping string, physicalCores, packages int) string {
	clean := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	var b strings.Builder
	for _, kv := range [][2]string{
		{"vendor", clean(vendor)},
		{"model", clean(model)},
		{"family", clean(family)},
		{"model-id", clean(modelID)},
		{"stepping", clean(stepping)},
		{"physical-cores", strconv.Itoa(physicalCores)},
		{"packages", strconv.Itoa(packages)},
	} {
		if b.Len() > 0 {
			b.WriteByte(';')
		}
		b.WriteString(kv[0] + "=" + kv[1])
	}
	return b.String()
}
