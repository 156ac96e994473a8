//go:build !linux && !darwin && !windows

package fingerprint

import (
	"context"
	"runtime"

	"github.com/denisbrodbeck/machineid"
)

// osMachineID is machineid.ID() (/etc/hostid or the SMBIOS UUID on BSDs).
func osMachineID(Options) (raw, source string, err error) {
	raw, err = machineid.ID()
	return raw, "os machine ID (machineid)", err
}

// collect has no component sources on this platform yet; the machine
// fingerprint still works.
func collect(context.Context, Options) collection {
	var c collection
	for _, k := range kindOrder {
		c.skip(k, "no collector for %s", runtime.GOOS)
	}
	return c
}
