package agent

import (
	"encoding/json"

	"github.com/keygen-agent/keygen-agent/ipc"
)

// Keygen's limits on a process's metadata. The create action's typed
// params (keygen-api controllers/api/v1/machine_processes_controller.rb:
// metadata depth maximum 2, typed_params' validations/depth.rb) refuse an
// object or array nested more than two levels inside metadata; the model
// (models/machine_process.rb with validators/json_validator.rb) adds 64
// keys counted through every level and 16 KiB of JSON. The agent nests an
// app's lease metadata under "appMetadata" next to 6 keys of its own
// (lease.processMetadata), which takes one level, 7 keys and about 1 KiB:
// an app's metadata may hold objects within its top-level object, but
// nothing nested deeper (jsonDepth at most 2).
const (
	maxAppMetadataDepth = 2
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
			"metadata is nested %d levels deep; Keygen accepts at most %d (objects inside the top-level object, nothing deeper): flatten it", d, maxAppMetadataDepth)
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
