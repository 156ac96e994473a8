package agent

import (
	"encoding/json"

	"github.com/keygen-agent/keygen-agent/ipc"
)

// Keygen's limits on a process's metadata (keygen-api models/machine_process.rb
// with validators/json_validator.rb): at most 4 levels deep (an object is
// one level plus its deepest value), 64 keys counted through every level,
// and 16 KiB of JSON. The agent nests an app's lease metadata under
// "appMetadata" next to 6 keys of its own (lease.processMetadata), so an
// app's metadata gets one level, 7 keys and about 1 KiB less.
const (
	maxAppMetadataDepth = 4 - 1
	maxAppMetadataKeys  = 64 - 7
	maxAppMetadataBytes = 16<<10 - 1<<10
)

// checkLeaseMetadata refuses lease metadata Keygen would reject when the
// process is spawned, with a clear error instead of a failed spawn.
func checkLeaseMetadata(md map[string]any) error {
	if len(md) == 0 {
		return nil
	}
	if d := jsonDepth(md); d > maxAppMetadataDepth {
		return ipc.Errorf(ipc.CodeInvalidRequest,
			"metadata is nested %d levels deep; Keygen accepts at most %d here (objects within objects within the metadata object): flatten it", d, maxAppMetadataDepth)
	}
	if n := jsonKeys(md); n > maxAppMetadataKeys {
		return ipc.Errorf(ipc.CodeInvalidRequest, "metadata has %d keys (counted at every level); Keygen accepts at most %d here", n, maxAppMetadataKeys)
	}
	b, err := json.Marshal(md)
	if err != nil {
		return ipc.Errorf(ipc.CodeInvalidRequest, "metadata is not JSON: %v", err)
	}
	if len(b) > maxAppMetadataBytes {
		return ipc.Errorf(ipc.CodeInvalidRequest, "metadata is %d bytes of JSON; Keygen accepts at most %d here", len(b), maxAppMetadataBytes)
	}
	return nil
}

// jsonDepth is json_validator.rb's calculate_depth.
func jsonDepth(v any) int {
	switch x := v.(type) {
	case map[string]any:
		d := 0
		for _, e := range x {
			d = max(d, jsonDepth(e))
		}
		return 1 + d
	case []any:
		d := 0
		for _, e := range x {
			d = max(d, jsonDepth(e))
		}
		return 1 + d
	}
	return 0
}

// jsonKeys is json_validator.rb's count_keys.
func jsonKeys(v any) int {
	switch x := v.(type) {
	case map[string]any:
		n := len(x)
		for _, e := range x {
			n += jsonKeys(e)
		}
		return n
	case []any:
		n := 0
		for _, e := range x {
			n += jsonKeys(e)
		}
		return n
	}
	return 0
}
