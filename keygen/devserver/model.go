package devserver

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Product is a seeded product.
type Product struct {
	ID       string
	Name     string
	Metadata map[string]any
	Created  time.Time
}

// PolicySpec holds every policy attribute of Keygen (keygen-api app/models/policy.rb). Zero
// values take Keygen's defaults for new policies; [Server.CreatePolicy]
// stores the effective values.
type PolicySpec struct {
	Name      string
	ProductID string // empty: the first product (one is created if none)
	Scheme    string // "" (random keys), ED25519_SIGN, ECDSA_P256_SIGN, RSA_2048_PKCS1_SIGN_V2, RSA_2048_PKCS1_PSS_SIGN_V2, ...
	Duration  *int   // seconds, nil = licenses do not expire

	Strict, Floating, Protected, RequireHeartbeat bool

	MaxMachines, MaxProcesses, MaxCores, MaxUsers, MaxUses *int
	MaxMemory, MaxDisk                                     *int64

	ExpirationStrategy     string // RESTRICT_ACCESS (default), REVOKE_ACCESS, MAINTAIN_ACCESS, ALLOW_ACCESS
	ExpirationBasis        string // FROM_CREATION (default), ...
	RenewalBasis           string // FROM_EXPIRY (default), ...
	TransferStrategy       string // KEEP_EXPIRY (default), RESET_EXPIRY
	AuthenticationStrategy string // TOKEN (default), LICENSE, SESSION, MIXED, NONE

	MachineUniquenessStrategy   string // UNIQUE_PER_LICENSE (default), UNIQUE_PER_POLICY, UNIQUE_PER_PRODUCT, UNIQUE_PER_ACCOUNT
	MachineMatchingStrategy     string // MATCH_ANY (default), MATCH_TWO, MATCH_MOST, MATCH_ALL
	ComponentUniquenessStrategy string // UNIQUE_PER_MACHINE (default), UNIQUE_PER_LICENSE, UNIQUE_PER_POLICY, UNIQUE_PER_PRODUCT, UNIQUE_PER_ACCOUNT
	ComponentMatchingStrategy   string // MATCH_ANY (default), ...
	MachineLeasingStrategy      string // PER_LICENSE (default), PER_USER
	ProcessLeasingStrategy      string // PER_MACHINE (default), PER_LICENSE, PER_USER
	OverageStrategy             string // NO_OVERAGE (default), ALWAYS_ALLOW_OVERAGE, ALLOW_1_25X_OVERAGE, ALLOW_1_5X_OVERAGE, ALLOW_2X_OVERAGE

	HeartbeatDuration             *int   // seconds (>= 60), nil = 600
	HeartbeatCullStrategy         string // DEACTIVATE_DEAD (default), KEEP_DEAD
	HeartbeatResurrectionStrategy string // NO_REVIVE (default), 1_MINUTE_REVIVE, ..., ALWAYS_REVIVE
	HeartbeatBasis                string // FROM_CREATION if RequireHeartbeat, else FROM_FIRST_PING

	RequireProductScope, RequirePolicyScope, RequireMachineScope, RequireFingerprintScope bool
	RequireComponentsScope, RequireUserScope, RequireChecksumScope, RequireVersionScope   bool
	RequireEnvironmentScope                                                               bool
	RequireCheckIn                                                                        bool
	CheckInInterval                                                                       string // day, week, month, year
	CheckInIntervalCount                                                                  int
	Metadata                                                                              map[string]any
}

// Policy is a stored policy: its id and effective attributes.
type Policy struct {
	ID      string
	Created time.Time
	PolicySpec
}

// User is a seeded user (license owner or license user).
type User struct {
	ID, Email string
	Banned    bool
	Created   time.Time
}

// LicenseSpec describes a license to create. Nil limits inherit the policy's.
type LicenseSpec struct {
	PolicyID                                               string // required
	Name                                                   string
	Key                                                    string     // optional custom key; default generated per the policy's scheme
	Expiry                                                 *time.Time // default: created + policy duration, if any
	MaxMachines, MaxProcesses, MaxCores, MaxUsers, MaxUses *int
	Suspended                                              bool
	OwnerID                                                string   // optional user id
	UserIDs                                                []string // optional additional license users
	Metadata                                               map[string]any
	// Permissions are the license's permissions; nil takes the account's
	// default (see [Server.SetDefaultLicensePermissions]), which is
	// [DefaultLicensePermissions] unless changed.
	Permissions []string
}

// License is a stored license. Limit fields hold the license's own
// overrides (nil = the policy's value).
type License struct {
	ID, Key, Name                                          string
	PolicyID, ProductID                                    string
	Expiry                                                 *time.Time
	Suspended                                              bool
	MaxMachines, MaxProcesses, MaxCores, MaxUsers, MaxUses *int
	Uses                                                   int
	OwnerID                                                string
	UserIDs                                                []string
	Metadata                                               map[string]any
	Created, Updated                                       time.Time
	LastValidated, LastCheckIn, LastCheckOut               *time.Time
	Permissions                                            []string // effective permissions ("*" = all)
}

// Entitlement is an account entitlement.
type Entitlement struct {
	ID, Code, Name string
	Metadata       map[string]any
	Created        time.Time
}

// MachineState is a snapshot of a machine for test inspection.
type MachineState struct {
	ID, Fingerprint, Name, Hostname, Platform string
	LicenseID, OwnerID                        string
	HeartbeatStatus                           string
	Cores                                     int
	LastHeartbeat                             *time.Time
	Metadata                                  map[string]any
	Created                                   time.Time
}

// ComponentState is a snapshot of a component.
type ComponentState struct {
	ID, Fingerprint, Name, MachineID, LicenseID string
	Metadata                                    map[string]any
}

// ProcessState is a snapshot of a process.
type ProcessState struct {
	ID, PID, MachineID, LicenseID, Status string
	LastHeartbeat                         time.Time
	Metadata                              map[string]any
}

// machine, component and process are the mutable rows behind the API.
type machine struct {
	ID, Fingerprint, Name, Hostname, Platform, IP string
	Cores                                         *int
	Memory, Disk                                  *int64
	MaxProcesses                                  *int
	Metadata                                      map[string]any
	LicenseID, OwnerID                            string
	LastHeartbeat                                 *time.Time
	LastCheckOut                                  *time.Time
	Created, Updated                              time.Time
}

type component struct {
	ID, Fingerprint, Name, MachineID string
	Metadata                         map[string]any
	Created, Updated                 time.Time
}

type process struct {
	ID, PID, MachineID string
	Metadata           map[string]any
	LastHeartbeat      time.Time
	Created, Updated   time.Time
}

type token struct {
	Token, ID  string
	Kind       string // admin, product, license, user
	ResourceID string
	Created    time.Time

	// Activation counters of license (activation) tokens: Keygen counts
	// the machines a license token creates and deletes (machines_controller.rb).
	MaxActivations, MaxDeactivations *int
	Activations, Deactivations       int
}

// Enumerations accepted for policy attributes.
var (
	enumSchemes         = []string{"", "ED25519_SIGN", "ECDSA_P256_SIGN", "RSA_2048_PKCS1_SIGN_V2", "RSA_2048_PKCS1_PSS_SIGN_V2", "RSA_2048_PKCS1_SIGN", "RSA_2048_PKCS1_PSS_SIGN", "RSA_2048_PKCS1_ENCRYPT", "RSA_2048_JWT_RS256", "LEGACY_ENCRYPT"}
	enumExpiration      = []string{"RESTRICT_ACCESS", "REVOKE_ACCESS", "MAINTAIN_ACCESS", "ALLOW_ACCESS"}
	enumExpirationBasis = []string{"FROM_CREATION", "FROM_FIRST_VALIDATION", "FROM_FIRST_ACTIVATION", "FROM_FIRST_DOWNLOAD", "FROM_FIRST_USE"}
	enumRenewal         = []string{"FROM_EXPIRY", "FROM_NOW", "FROM_NOW_IF_EXPIRED"}
	enumTransfer        = []string{"KEEP_EXPIRY", "RESET_EXPIRY"}
	enumAuth            = []string{"TOKEN", "LICENSE", "SESSION", "MIXED", "NONE"}
	enumMachineUniq     = []string{"UNIQUE_PER_LICENSE", "UNIQUE_PER_POLICY", "UNIQUE_PER_PRODUCT", "UNIQUE_PER_ACCOUNT"}
	enumComponentUniq   = []string{"UNIQUE_PER_MACHINE", "UNIQUE_PER_LICENSE", "UNIQUE_PER_POLICY", "UNIQUE_PER_PRODUCT", "UNIQUE_PER_ACCOUNT"}
	enumMatching        = []string{"MATCH_ANY", "MATCH_TWO", "MATCH_MOST", "MATCH_ALL"}
	enumMachineLeasing  = []string{"PER_LICENSE", "PER_USER"}
	enumProcessLeasing  = []string{"PER_MACHINE", "PER_LICENSE", "PER_USER"}
	enumOverage         = []string{"NO_OVERAGE", "ALWAYS_ALLOW_OVERAGE", "ALLOW_1_25X_OVERAGE", "ALLOW_1_5X_OVERAGE", "ALLOW_2X_OVERAGE"}
	enumCull            = []string{"DEACTIVATE_DEAD", "KEEP_DEAD"}
	enumResurrection    = []string{"NO_REVIVE", "1_MINUTE_REVIVE", "2_MINUTE_REVIVE", "5_MINUTE_REVIVE", "10_MINUTE_REVIVE", "15_MINUTE_REVIVE", "ALWAYS_REVIVE"}
	enumBasis           = []string{"FROM_CREATION", "FROM_FIRST_PING"}
	enumCheckIn         = []string{"", "day", "week", "month", "year"}
)

func def(v *string, d string) {
	if *v == "" {
		*v = d
	}
}

// normalize fills Keygen's defaults into a policy spec and reports the first
// invalid attribute as an API error (pointer and detail).
func (p *PolicySpec) normalize() *apiError {
	def(&p.Name, "Policy")
	def(&p.ExpirationStrategy, "RESTRICT_ACCESS")
	def(&p.ExpirationBasis, "FROM_CREATION")
	def(&p.RenewalBasis, "FROM_EXPIRY")
	def(&p.TransferStrategy, "KEEP_EXPIRY")
	def(&p.AuthenticationStrategy, "TOKEN")
	def(&p.MachineUniquenessStrategy, "UNIQUE_PER_LICENSE")
	def(&p.MachineMatchingStrategy, "MATCH_ANY")
	def(&p.ComponentUniquenessStrategy, "UNIQUE_PER_MACHINE")
	def(&p.ComponentMatchingStrategy, "MATCH_ANY")
	def(&p.MachineLeasingStrategy, "PER_LICENSE")
	def(&p.ProcessLeasingStrategy, "PER_MACHINE")
	def(&p.OverageStrategy, "NO_OVERAGE")
	def(&p.HeartbeatCullStrategy, "DEACTIVATE_DEAD")
	def(&p.HeartbeatResurrectionStrategy, "NO_REVIVE")
	if p.RequireHeartbeat {
		def(&p.HeartbeatBasis, "FROM_CREATION")
	} else {
		def(&p.HeartbeatBasis, "FROM_FIRST_PING")
	}
	if !p.Floating {
		one := 1
		p.MaxMachines = &one
	}
	checks := []struct {
		attr string
		v    string
		in   []string
	}{
		{"scheme", p.Scheme, enumSchemes},
		{"expirationStrategy", p.ExpirationStrategy, enumExpiration},
		{"expirationBasis", p.ExpirationBasis, enumExpirationBasis},
		{"renewalBasis", p.RenewalBasis, enumRenewal},
		{"transferStrategy", p.TransferStrategy, enumTransfer},
		{"authenticationStrategy", p.AuthenticationStrategy, enumAuth},
		{"machineUniquenessStrategy", p.MachineUniquenessStrategy, enumMachineUniq},
		{"machineMatchingStrategy", p.MachineMatchingStrategy, enumMatching},
		{"componentUniquenessStrategy", p.ComponentUniquenessStrategy, enumComponentUniq},
		{"componentMatchingStrategy", p.ComponentMatchingStrategy, enumMatching},
		{"machineLeasingStrategy", p.MachineLeasingStrategy, enumMachineLeasing},
		{"processLeasingStrategy", p.ProcessLeasingStrategy, enumProcessLeasing},
		{"overageStrategy", p.OverageStrategy, enumOverage},
		{"heartbeatCullStrategy", p.HeartbeatCullStrategy, enumCull},
		{"heartbeatResurrectionStrategy", p.HeartbeatResurrectionStrategy, enumResurrection},
		{"heartbeatBasis", p.HeartbeatBasis, enumBasis},
		{"checkInInterval", p.CheckInInterval, enumCheckIn},
	}
	for _, c := range checks {
		if !slices.Contains(c.in, c.v) {
			return unprocessable("/data/attributes/"+c.attr, "unsupported "+camelToWords(c.attr), snake(c.attr)+"_NOT_ALLOWED")
		}
	}
	positive := []struct {
		attr string
		v    *int
		min  int
	}{
		{"maxMachines", p.MaxMachines, 0}, {"maxProcesses", p.MaxProcesses, 1}, {"maxCores", p.MaxCores, 1},
		{"maxUsers", p.MaxUsers, 1}, {"maxUses", p.MaxUses, 0}, {"heartbeatDuration", p.HeartbeatDuration, 60},
		{"duration", p.Duration, 86400},
	}
	for _, c := range positive {
		if c.v != nil && *c.v < c.min {
			return unprocessable("/data/attributes/"+c.attr, fmt.Sprintf("must be greater than or equal to %d", c.min), snake(c.attr)+"_INVALID")
		}
	}
	if p.HeartbeatResurrectionStrategy == "ALWAYS_REVIVE" && p.HeartbeatCullStrategy != "KEEP_DEAD" {
		return unprocessable("/data/attributes/heartbeatResurrectionStrategy", "incompatible heartbeat cull strategy (must be KEEP_DEAD when resurrection strategy is ALWAYS_REVIVE)", "HEARTBEAT_RESURRECTION_STRATEGY_NOT_ALLOWED")
	}
	if p.MaxMachines != nil {
		switch p.OverageStrategy {
		case "ALLOW_1_25X_OVERAGE":
			if !p.Floating || *p.MaxMachines%4 != 0 {
				return unprocessable("/data/attributes/overageStrategy", "incompatible overage strategy (cannot use ALLOW_1_25X_OVERAGE for node-locked policy or with max machines not divisible by 4)", "OVERAGE_STRATEGY_NOT_ALLOWED")
			}
		case "ALLOW_1_5X_OVERAGE":
			if !p.Floating || *p.MaxMachines%2 != 0 {
				return unprocessable("/data/attributes/overageStrategy", "incompatible overage strategy (cannot use ALLOW_1_5X_OVERAGE for node-locked policy or with max machines not divisible by 2)", "OVERAGE_STRATEGY_NOT_ALLOWED")
			}
		}
	}
	if p.RequireCheckIn && (p.CheckInInterval == "" || p.CheckInIntervalCount < 1 || p.CheckInIntervalCount > 365) {
		return unprocessable("/data/attributes/checkInInterval", "must be one of: day, week, month, year (with a count 1-365)", "CHECK_IN_INTERVAL_INVALID")
	}
	p.Metadata = cloneMap(p.Metadata)
	return nil
}

// heartbeatDuration is the machine heartbeat window and process interval.
func (p *Policy) heartbeatDuration() time.Duration {
	if p.HeartbeatDuration != nil {
		return time.Duration(*p.HeartbeatDuration) * time.Second
	}
	return 600 * time.Second
}

// reviveWindow reports how long after nextHeartbeat a dead resource can be
// revived; always is true for ALWAYS_REVIVE.
func (p *Policy) reviveWindow() (d time.Duration, always bool) {
	switch p.HeartbeatResurrectionStrategy {
	case "ALWAYS_REVIVE":
		return 0, true
	case "1_MINUTE_REVIVE":
		return time.Minute, false
	case "2_MINUTE_REVIVE":
		return 2 * time.Minute, false
	case "5_MINUTE_REVIVE":
		return 5 * time.Minute, false
	case "10_MINUTE_REVIVE":
		return 10 * time.Minute, false
	case "15_MINUTE_REVIVE":
		return 15 * time.Minute, false
	}
	return -1, false
}

// overageFactor is how far past a limit the policy lets a count go; <0 means
// unbounded.
func (p *Policy) overageFactor() float64 {
	switch p.OverageStrategy {
	case "ALWAYS_ALLOW_OVERAGE":
		return -1
	case "ALLOW_1_25X_OVERAGE":
		return 1.25
	case "ALLOW_1_5X_OVERAGE":
		return 1.5
	case "ALLOW_2X_OVERAGE":
		return 2
	}
	return 1
}

// exceeds reports whether count breaks limit even with the overage factor.
func (p *Policy) exceeds(count, limit int) bool {
	f := p.overageFactor()
	if f < 0 {
		return false
	}
	return float64(count) > float64(limit)*f
}

func (p *Policy) supportsLicenseAuth() bool {
	return p.AuthenticationStrategy == "LICENSE" || p.AuthenticationStrategy == "MIXED"
}

func (p *Policy) supportsTokenAuth() bool {
	return p.AuthenticationStrategy == "TOKEN" || p.AuthenticationStrategy == "MIXED"
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return maps.Clone(m)
}

func intp(v int) *int { return &v }

func firstInt(vs ...*int) *int {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}
