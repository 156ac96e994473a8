package keygen

import "time"

// License is a Keygen license resource.
type License struct {
	ID, Name, Key, Status, Scheme string
	Expiry                        *time.Time
	Suspended, Strict, Floating   bool
	Protected, RequireHeartbeat   bool
	MaxMachines, MaxProcesses     *int
	MaxUsers, MaxCores            *int
	Uses                          int
	Metadata                      map[string]any
	PolicyID, ProductID           string
	Created, Updated              time.Time
}

// Machine is a Keygen machine resource.
type Machine struct {
	ID, Fingerprint, Name, Hostname, Platform, IP string
	HeartbeatStatus, LicenseID                    string
	Cores                                         int
	Memory                                        int64
	RequireHeartbeat                              bool
	HeartbeatDuration                             int // seconds
	MaxProcesses                                  *int
	LastHeartbeat, NextHeartbeat                  *time.Time
	Metadata                                      map[string]any
	Created                                       time.Time
}

// Process is a Keygen process resource.
type Process struct {
	ID, PID, Status, MachineID, LicenseID string
	Interval                              int // seconds
	LastHeartbeat, NextHeartbeat          *time.Time
	Metadata                              map[string]any
	Created                               time.Time
	// Signed is the response this process was read from, as Keygen sent
	// it (spawn, read and ping); nil for processes read from a list.
	Signed *SignedResponse
}

// Component is a Keygen machine component.
type Component struct {
	ID, Fingerprint, Name, MachineID string
	Metadata                         map[string]any
}

// Entitlement is a Keygen entitlement.
type Entitlement struct {
	ID, Code, Name string
	Metadata       map[string]any
}

// Policy is a Keygen policy, as far as the agent needs it.
type Policy struct {
	ID, Name, Scheme, OverageStrategy, ProcessLeasingStrategy, MachineLeasingStrategy string
	HeartbeatCullStrategy, HeartbeatResurrectionStrategy, HeartbeatBasis              string
	ExpirationStrategy, AuthenticationStrategy                                        string
	MachineMatchingStrategy, ComponentMatchingStrategy                                string
	Strict, Floating, RequireHeartbeat                                                bool
	MaxMachines, MaxProcesses, MaxCores, MaxUsers                                     *int
	HeartbeatDuration                                                                 *int
	Duration                                                                          *int
}

// ValidateOptions is the validation scope. Empty fields are not sent.
type ValidateOptions struct {
	Fingerprint                            string
	Fingerprints, Components, Entitlements []string
	Product, Policy                        string
	// Machine is the machine's id; Environment the Keygen environment
	// (code or id). Both count for policies that require those scopes
	// (license_validation_service.rb).
	Machine, Environment string
}

// Validation is the outcome of a validation. Decide on Valid and use Code
// for the reason: Valid can be true with a Code other than VALID.
type Validation struct {
	Valid        bool
	Code, Detail string
	License      *License // nil when the key does not exist
	Timestamp    time.Time
	Nonce        int64
	// Date is the answer's verified signed Date (zero when responses are
	// not verified). The answer echoed this request's nonce, so Date is
	// Keygen's clock at the time of the call, whatever the local clock
	// says. Sent and Received are the local clock (Config.Now) just before
	// the request was sent and just after the answer was read.
	Date, Sent, Received time.Time
}

// ActivateParams describes a machine to activate.
type ActivateParams struct {
	LicenseID, Fingerprint, Name, Hostname, Platform string
	Cores                                            int
	Memory                                           int64
	Metadata                                         map[string]any
	Components                                       []ComponentParams // at most 20
}

// ComponentParams describes a component to create.
type ComponentParams struct {
	Fingerprint, Name string
	Metadata          map[string]any
}

// CheckoutOptions are check-out options. Zero values use Keygen's defaults.
type CheckoutOptions struct {
	Algorithm string // e.g. "aes-256-gcm+ed25519"; overrides Encrypt
	Encrypt   bool
	Include   []string
	TTL       time.Duration // 0 = server default (one month); at least 1h
	NoExpiry  bool          // ttl: null
}

// Checkout is a checked-out certificate, as returned by Keygen. Callers must
// still open it with [OpenCertificate] before trusting it.
type Checkout struct {
	Certificate []byte
	Algorithm   string
	Issued      time.Time
	Expiry      *time.Time
	TTL         *int
	// MachineID and LicenseID are the answer's relationships (empty when
	// absent).
	MachineID, LicenseID string
}
