package ipc

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/keygen-agent/keygen-agent/leaseverify"
)

// ProtocolVersion is the protocol's major version. Changes within a major
// version are additive only; unknown fields are ignored by both sides.
const ProtocolVersion = 1

// Method names. Every name here is documented in docs/protocol.md (a test
// checks the two lists agree).
const (
	MethodHello          = "agent.hello"
	MethodPeer           = "agent.peer"
	MethodStatus         = "license.status"
	MethodAcquire        = "lease.acquire"
	MethodRelease        = "lease.release"
	MethodActivate       = "license.activate"
	MethodDeactivate     = "license.deactivate"
	MethodImport         = "license.import"
	MethodCheckout       = "license.checkout"
	MethodLeasesList     = "leases.list"
	MethodLeasesRelease  = "leases.release"
	MethodUse            = "license.use"
	NotifyLicenseChanged = "license.changed"
	NotifyLeaseRevoked   = "lease.revoked"
	NotifyLeaseConfirmed = "lease.confirmed"
)

// Methods lists every request method of the protocol (not notifications).
var Methods = []string{
	MethodHello, MethodPeer, MethodStatus, MethodAcquire, MethodRelease,
	MethodActivate, MethodDeactivate, MethodImport, MethodCheckout,
	MethodLeasesList, MethodLeasesRelease, MethodUse,
}

// Notifications lists every server-to-client notification of the protocol.
var Notifications = []string{NotifyLicenseChanged, NotifyLeaseRevoked, NotifyLeaseConfirmed}

// Peer is what the kernel says about the process at the other end of a
// connection. It is resolved once at accept and never taken from a request.
type Peer struct {
	PID       int    `json:"pid"`
	UID       string `json:"uid"`                  // uid number (unix) or user SID (Windows)
	GID       string `json:"gid,omitempty"`        // primary gid (unix); empty on Windows
	Admin     bool   `json:"admin"`                // root / member of the admin group / elevated Administrator
	StartTime uint64 `json:"start_time,omitempty"` // opaque process start time, 0 if unknown
	Exe       string `json:"exe,omitempty"`        // executable path, best effort
}

// HelloParams are the params of agent.hello.
type HelloParams struct {
	Protocol int    `json:"protocol"`
	Client   string `json:"client,omitempty"`
}

// HelloResult is the result of agent.hello.
type HelloResult struct {
	Protocol     int      `json:"protocol"`
	AgentVersion string   `json:"agent_version"`
	Capabilities []string `json:"capabilities"`
	State        string   `json:"state"` // "starting" | "ready" | ...
}

// Status is the result of license.status.
type Status struct {
	State        string       `json:"state"`
	Code         string       `json:"code,omitempty"`
	Detail       string       `json:"detail,omitempty"`
	Valid        bool         `json:"valid"`
	Online       bool         `json:"online"`
	License      *LicenseInfo `json:"license,omitempty"`
	Entitlements []string     `json:"entitlements"`
	Machine      *MachineInfo `json:"machine,omitempty"`
	LastSync     *time.Time   `json:"last_sync,omitempty"`
	OfflineUntil *time.Time   `json:"offline_until,omitempty"`
	// OfflineSource is the verified certificate offline use rests on:
	// "machine_file" (bound to this machine) or "license_file" (checked
	// out or imported when no machine file can be had). Empty when there
	// is none.
	OfflineSource string `json:"offline_source,omitempty"`
	// Activation is the agent's mode: "machine" (this machine is activated
	// in Keygen) or "none" (license-only: no machine, leases counted
	// locally against the license's maxProcesses).
	Activation string `json:"activation,omitempty"`
	// NextCheckIn is when the license must next check in (policies with
	// requireCheckIn); the agent checks in before it.
	NextCheckIn     *time.Time        `json:"next_check_in,omitempty"`
	Leases          LeaseUsage        `json:"leases"`
	HardwareChanges []ComponentChange `json:"hardware_changes,omitempty"`
	// OtherAgents are other keygen-agent instances seen holding Keygen
	// processes on this machine for this license (a system and a per-user
	// agent, or two installs): they share the machine's process limit.
	OtherAgents []OtherAgent `json:"other_agents,omitempty"`
	// ClockSkew is set when the local clock differs from Keygen's by more
	// than a minute (or the clock tolerance, when smaller): a warning, never a lock-out online.
	ClockSkew *ClockSkew `json:"clock_skew,omitempty"`
}

// OtherAgent is another agent instance in a [Status].
type OtherAgent struct {
	AgentID   string `json:"agent_id"`
	Processes int    `json:"processes"` // its Keygen processes on this machine
}

// ClockSkew describes how far the local clock is from Keygen's, learned
// from the last license validation.
type ClockSkew struct {
	// Seconds is Keygen's clock minus the local clock: positive when the
	// local clock is behind.
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail"`
}

// LicenseInfo describes the license in a [Status].
type LicenseInfo struct {
	ID           string     `json:"id"`
	Name         string     `json:"name,omitempty"`
	Expiry       *time.Time `json:"expiry,omitempty"`
	MaxProcesses *int       `json:"max_processes,omitempty"`
	MaxMachines  *int       `json:"max_machines,omitempty"`
	Strategy     string     `json:"strategy,omitempty"`
	// Overage and ComponentMatching are the policy's overageStrategy and
	// componentMatchingStrategy as the agent applies them.
	Overage           string `json:"overage_strategy,omitempty"`
	ComponentMatching string `json:"component_matching_strategy,omitempty"`
	// PolicySource says where the three strategies come from: "policy"
	// (read from Keygen) or "config" (assumed from the agent's config
	// because the license may not read its policy, Keygen's default).
	PolicySource string `json:"policy_source,omitempty"`
}

// MachineInfo describes this machine's activation in a [Status].
type MachineInfo struct {
	ID          string `json:"id"`
	Fingerprint string `json:"fingerprint"`
}

// LeaseUsage counts leases in a [Status]. Limit is nil when unlimited.
type LeaseUsage struct {
	Active   int  `json:"active"`
	Limit    *int `json:"limit,omitempty"`
	Capacity int  `json:"capacity"`
}

// ComponentChange is one hardware component that differs from activation.
type ComponentChange struct {
	Name   string `json:"name"`
	Change string `json:"change"` // "changed" | "added" | "missing"
}

// AcquireParams are the params of lease.acquire. WaitMS > 0 asks the agent
// to wait up to that long for a free seat instead of failing at once.
type AcquireParams struct {
	App        string         `json:"app,omitempty"`
	AppVersion string         `json:"app_version,omitempty"`
	Metadata   map[string]any `json:"metadata,omitempty"`
	WaitMS     int64          `json:"wait_ms,omitempty"`
	// Entitlements lists entitlement codes the license must hold for this
	// lease; a license lacking any is refused with ENTITLEMENTS_MISSING
	// (error data "missing" lists the codes it lacks).
	Entitlements []string `json:"entitlements,omitempty"`
	// Confirm asks the agent to answer only once Keygen has confirmed the
	// lease (evidence "signed"), or with evidence "offline" when Keygen is
	// unreachable; never with "pending".
	Confirm bool `json:"confirm,omitempty"`
}

// AcquireResult is the result of lease.acquire.
type AcquireResult struct {
	LeaseID           string   `json:"lease_id"`
	ProcessID         string   `json:"process_id,omitempty"`
	HeartbeatInterval int      `json:"heartbeat_interval"` // seconds
	Offline           bool     `json:"offline"`
	Entitlements      []string `json:"entitlements"`
	Reused            bool     `json:"reused"`
	// Evidence is Keygen's signed proof of the lease, for the app to check
	// with the account's public key (docs/protocol.md, "Verifying a
	// lease"). Nil from agents that predate it.
	Evidence *Evidence `json:"evidence,omitempty"`
}

// Evidence is the evidence object of a lease; see package leaseverify.
type Evidence = leaseverify.Evidence

// LeaseConfirmed is the params of the lease.confirmed notification: Keygen
// confirmed a lease that was answered with pending evidence.
type LeaseConfirmed struct {
	LeaseID   string    `json:"lease_id"`
	ProcessID string    `json:"process_id"`
	Evidence  *Evidence `json:"evidence"`
}

// ReleaseParams are the params of lease.release and leases.release.
type ReleaseParams struct {
	LeaseID string `json:"lease_id"`
}

// DeactivateParams are the params of license.deactivate.
type DeactivateParams struct {
	// Offline: when Keygen cannot be reached, drop this machine's license
	// state anyway and deactivate it in Keygen once it is reachable again.
	// Without it an unreachable Keygen fails the call and changes nothing.
	Offline bool `json:"offline,omitempty"`
}

// ActivateParams are the params of license.activate.
type ActivateParams struct {
	Key string `json:"key"`
	// Token is an optional license token for policies that require token
	// authentication (Keygen's default); never logged.
	Token string `json:"token,omitempty"`
}

// ImportParams are the params of license.import: a license or machine file.
type ImportParams struct {
	Certificate string `json:"certificate"`
}

// UseParams are the params of license.use. Count is how many uses to
// record: absent or 0 means 1; a negative count takes uses back (Keygen's
// decrement-usage, which Keygen allows only to admin and product tokens).
type UseParams struct {
	Count int `json:"count,omitempty"`
}

// UseResult is the result of license.use.
type UseResult struct {
	// Uses is the license's use count after this call: Keygen's answer
	// online; offline, the last count Keygen gave plus the uses queued
	// since.
	Uses int `json:"uses"`
	// MaxUses is the license's limit (nil: unlimited).
	MaxUses *int `json:"max_uses,omitempty"`
	// Offline: Keygen could not be reached; the uses are queued and sent
	// when it is back.
	Offline bool `json:"offline"`
	// Queued is how many uses wait in the offline queue (increments minus
	// decrements).
	Queued int `json:"queued"`
}

// LeaseInfo is one lease in [LeasesListResult].
type LeaseInfo struct {
	LeaseID    string     `json:"lease_id"`
	ProcessID  string     `json:"process_id,omitempty"`
	App        string     `json:"app,omitempty"`
	AppVersion string     `json:"app_version,omitempty"`
	User       string     `json:"user,omitempty"`
	PID        int        `json:"pid"`
	Since      time.Time  `json:"since"`
	Offline    bool       `json:"offline"`
	NextPing   *time.Time `json:"next_ping,omitempty"`
}

// LeasesListResult is the result of leases.list.
type LeasesListResult struct {
	Leases []LeaseInfo `json:"leases"`
}

// LeaseRevoked is the params of the lease.revoked notification.
type LeaseRevoked struct {
	LeaseID string `json:"lease_id"`
	Reason  string `json:"reason"`
	Code    string `json:"code,omitempty"`
}

// Notification is a server-to-client message with no reply.
type Notification struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

// Stable error codes, carried in error.data.code. See docs/protocol.md.
const (
	CodeProcessLimitExceeded = "PROCESS_LIMIT_EXCEEDED"
	CodeLicenseInvalid       = "LICENSE_INVALID"
	CodeNotActivated         = "NOT_ACTIVATED"
	CodeOfflineExpired       = "OFFLINE_EXPIRED"
	CodePermissionDenied     = "PERMISSION_DENIED"
	CodeInvalidRequest       = "INVALID_REQUEST"
	CodeInternal             = "INTERNAL"
	CodeHeartbeatCapacity    = "HEARTBEAT_CAPACITY_EXCEEDED"
	CodeNotFound             = "NOT_FOUND"
	CodeStarting             = "STARTING"
	CodeUnsupportedVersion   = "UNSUPPORTED_VERSION"
	CodeTimeout              = "TIMEOUT"
	CodeStopping             = "STOPPING"
	// CodeProcessExited: the calling process (or a lease's process) has
	// exited, e.g. a child acquiring on a connection inherited from a
	// parent that is gone.
	CodeProcessExited = "PROCESS_EXITED"
	// CodeLimitReduced: the license's process limit fell below the leases
	// held; the newest leases are revoked with it.
	CodeLimitReduced = "LIMIT_REDUCED"
	// CodeEntitlementsMissing: lease.acquire asked for entitlements the
	// license does not hold; data.missing lists them.
	CodeEntitlementsMissing = "ENTITLEMENTS_MISSING"
	// CodeUsesExceeded: license.use would take the license's uses past
	// its maxUses (Keygen's USES_LIMIT_EXCEEDED, or the agent's own check
	// offline); data.limit, data.uses and data.count say by how much.
	CodeUsesExceeded = "USES_EXCEEDED"
	// Protocol-level codes produced by the server itself.
	CodeParseError      = "PARSE_ERROR"
	CodeMethodNotFound  = "METHOD_NOT_FOUND"
	CodeMessageTooLarge = "MESSAGE_TOO_LARGE"
	CodeBusy            = "BUSY"
	CodeUnavailable     = "UNAVAILABLE" // client side: the agent cannot be reached
)

// JSON-RPC numeric error codes. The standard ones are used for protocol
// failures; each stable string code has its own number in the server range.
const (
	rpcParseError     = -32700
	rpcInvalidRequest = -32600
	rpcMethodNotFound = -32601
	rpcInvalidParams  = -32602
	rpcInternal       = -32603
	rpcServerError    = -32000
)

var rpcCodes = map[string]int{
	CodeParseError:           rpcParseError,
	CodeMethodNotFound:       rpcMethodNotFound,
	CodeInvalidRequest:       rpcInvalidParams,
	CodeMessageTooLarge:      rpcInvalidRequest,
	CodeInternal:             rpcInternal,
	CodeProcessLimitExceeded: -32001,
	CodeLicenseInvalid:       -32002,
	CodeNotActivated:         -32003,
	CodeOfflineExpired:       -32004,
	CodePermissionDenied:     -32005,
	CodeHeartbeatCapacity:    -32006,
	CodeNotFound:             -32007,
	CodeStarting:             -32008,
	CodeUnsupportedVersion:   -32009,
	CodeTimeout:              -32010,
	CodeBusy:                 -32011,
	CodeStopping:             -32012,
	CodeProcessExited:        -32013,
	CodeLimitReduced:         -32014,
	CodeEntitlementsMissing:  -32015,
	CodeUsesExceeded:         -32016,
}

// RPCCode returns the JSON-RPC numeric code used on the wire for a stable
// string code; unknown codes map to -32000.
func RPCCode(code string) int {
	if n, ok := rpcCodes[code]; ok {
		return n
	}
	return rpcServerError
}

// Error is a typed protocol error. Handlers return it to answer with a
// specific code; on the client, every error answer decodes into one.
// Data, if it marshals to a JSON object, is merged into error.data next to
// "code" (for example {"limit": 5, "count": 5} for PROCESS_LIMIT_EXCEEDED).
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
	// RPCCode is the numeric JSON-RPC code seen on the wire (client side);
	// the server derives it from Code.
	RPCCode int `json:"-"`
}

// Errorf returns an *Error with code and a formatted human message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// Is reports whether target is an *Error with the same Code, so
// errors.Is(err, &ipc.Error{Code: ipc.CodeNotFound}) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// IsCode reports whether err is (or wraps) an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// DataInt returns the integer field key of the error's data, if present.
func (e *Error) DataInt(key string) (int, bool) {
	m, ok := e.Data.(map[string]any)
	if !ok {
		return 0, false
	}
	switch v := m[key].(type) {
	case float64:
		return int(v), true
	case json.Number:
		n, err := v.Int64()
		return int(n), err == nil
	case int:
		return v, true
	}
	return 0, false
}
