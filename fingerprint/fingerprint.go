package fingerprint

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/shirou/gopsutil/v4/common"
	"github.com/shirou/gopsutil/v4/mem"
)

// DefaultIdentityEnv is the environment variable read for an explicit
// machine identity when [Options.IdentityEnv] is empty.
const DefaultIdentityEnv = "KEYGEN_AGENT_MACHINE_ID"

// MaxComponents is Keygen's limit on components sent inline with an
// activation; more give 422 "too many records".
const MaxComponents = 20

// Component names. Disks and NICs are numbered after sorting by fingerprint,
// so the numbering does not depend on enumeration order (sda/sdb swaps).
const (
	NameSystemUUID      = "system-uuid"
	NameBaseboardSerial = "baseboard-serial"
	NameCPU             = "cpu"
	kindDisk            = "disk"
	kindNIC             = "nic"
)

// kindOrder is the canonical order of components in a Result, which is also
// the priority order when more than MaxComponents are found.
var kindOrder = []string{NameSystemUUID, NameBaseboardSerial, NameCPU, kindDisk, kindNIC}

// Options configures Compute. AppID is required.
type Options struct {
	AppID        string              // vendor app id: the HMAC key for everything
	IdentityEnv  string              // default DefaultIdentityEnv: explicit identity (containers), HMAC'd
	IdentityFile string              // optional file holding an explicit identity, HMAC'd
	Root         string              // filesystem root for the Linux collectors ("/" default)
	Getenv       func(string) string // default os.Getenv
}

func (o Options) root() string {
	if o.Root == "" {
		return "/"
	}
	return o.Root
}

func (o Options) getenv(k string) string {
	if o.Getenv == nil {
		return os.Getenv(k)
	}
	return o.Getenv(k)
}

func (o Options) identityEnv() string {
	if o.IdentityEnv == "" {
		return DefaultIdentityEnv
	}
	return o.IdentityEnv
}

// Component is one hardware component as sent to Keygen.
type Component struct {
	Name        string `json:"name"`        // stable: "system-uuid", "baseboard-serial", "cpu", "disk-0", "nic-0"
	Fingerprint string `json:"fingerprint"` // hex HMAC-SHA256(app ID, kind + ":" + raw value)
	Source      string `json:"source"`      // local-only description of where it was read; never the value
}

// Skipped records a source that produced no component, and why.
type Skipped struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Attributes are the machine attributes sent at activation.
type Attributes struct {
	Platform string `json:"platform"` // GOOS/GOARCH, as Keygen's SDKs send it
	Hostname string `json:"hostname"`
	Cores    int    `json:"cores"`  // logical CPUs usable by this process (runtime.NumCPU), as Keygen's SDKs send it
	Memory   int64  `json:"memory"` // total physical memory in bytes; 0 if unknown
}

// Result is everything Compute derives. It contains no raw identifier.
type Result struct {
	Fingerprint    string      `json:"fingerprint"`
	IdentitySource string      `json:"identity_source"` // e.g. "os machine ID (/etc/machine-id)", "environment KEYGEN_AGENT_MACHINE_ID"
	Components     []Component `json:"components"`      // canonical order, at most MaxComponents
	Skipped        []Skipped   `json:"skipped"`
	Attributes     Attributes  `json:"attributes"`
}

// ComponentFingerprints returns the component fingerprints in order, as
// passed in a validation's components scope.
func (r *Result) ComponentFingerprints() []string {
	out := make([]string, len(r.Components))
	for i, c := range r.Components {
		out[i] = c.Fingerprint
	}
	return out
}

func (r *Result) clone() *Result {
	c := *r
	c.Components = slices.Clone(r.Components)
	c.Skipped = slices.Clone(r.Skipped)
	return &c
}

// rawComponent is one value read from the machine. It never leaves the
// package: only its HMAC does.
type rawComponent struct {
	kind   string // one of kindOrder
	value  string // raw identifier (serial, UUID, MAC, CPU identity string)
	source string // description without the value, e.g. "sysfs /sys/block/nvme0n1/device/serial"
}

// collection is what a platform collector found.
type collection struct {
	raws    []rawComponent
	skipped []Skipped
}

func (c *collection) add(kind, value, source string) {
	c.raws = append(c.raws, rawComponent{kind: kind, value: value, source: source})
}

func (c *collection) skip(name, format string, args ...any) {
	c.skipped = append(c.skipped, Skipped{Name: name, Reason: fmt.Sprintf(format, args...)})
}

// Compute resolves the machine identity, collects the components and the
// attributes, and derives the fingerprints. It fails with an error matching
// ErrNoMachineID when no usable identity exists; missing components are not
// errors (they are listed in Result.Skipped).
func Compute(ctx context.Context, o Options) (*Result, error) {
	if strings.TrimSpace(o.AppID) == "" {
		return nil, errors.New("fingerprint: Options.AppID is required (it keys every HMAC)")
	}
	id, err := resolveIdentity(o)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	col := collect(ctx, o)
	attrs := attributes(ctx, o)
	return derive(o.AppID, id, col, attrs), nil
}

// derive is the pure part of Compute: identity and raw values in, HMACs out.
func derive(appID string, id identity, col collection, attrs Attributes) *Result {
	r := &Result{
		Fingerprint:    hmacHex(id.key, appID),
		IdentitySource: id.source,
		Components:     []Component{},
		Skipped:        slices.Clone(col.skipped),
		Attributes:     attrs,
	}
	type fp struct {
		rawComponent
		sum string
	}
	byKind := map[string][]fp{}
	seen := map[string]string{} // fingerprint -> source of the first occurrence
	for _, rc := range col.raws {
		v := normalise(rc.kind, rc.value)
		if v == "" {
			continue
		}
		sum := hmacHex(appID, rc.kind+":"+v)
		if first, dup := seen[sum]; dup {
			r.Skipped = append(r.Skipped, Skipped{Name: rc.kind, Reason: fmt.Sprintf("%s: same value as %s (multipath or duplicate)", rc.source, first)})
			continue
		}
		seen[sum] = rc.source
		byKind[rc.kind] = append(byKind[rc.kind], fp{rc, sum})
	}
	for _, kind := range kindOrder {
		list := byKind[kind]
		slices.SortFunc(list, func(a, b fp) int { return strings.Compare(a.sum, b.sum) })
		numbered := kind == kindDisk || kind == kindNIC
		for i, f := range list {
			name := kind
			if numbered {
				name = kind + "-" + strconv.Itoa(i)
			} else if i > 0 {
				// Single-valued kinds: a collector reports at most one.
				name = kind + "-" + strconv.Itoa(i)
			}
			if len(r.Components) >= MaxComponents {
				r.Skipped = append(r.Skipped, Skipped{Name: name, Reason: fmt.Sprintf("%s: over Keygen's limit of %d components", f.source, MaxComponents)})
				continue
			}
			r.Components = append(r.Components, Component{Name: name, Fingerprint: f.sum, Source: f.source})
		}
	}
	slices.SortStableFunc(r.Skipped, func(a, b Skipped) int { return strings.Compare(a.Name, b.Name) })
	return r
}

// normalise canonicalises a raw value so that cosmetic differences between
// sources (case of hex digits, padding) do not change the fingerprint.
func normalise(kind, v string) string {
	v = strings.TrimSpace(v)
	switch kind {
	case NameSystemUUID, kindNIC:
		v = strings.ToLower(v)
	}
	return v
}

func hmacHex(key, msg string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

// attributes gathers the activation attributes. Failures leave zero values:
// they are informational for Keygen, not identity.
func attributes(ctx context.Context, o Options) Attributes {
	a := Attributes{
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
		Cores:    runtime.NumCPU(),
	}
	if h, err := os.Hostname(); err == nil {
		a.Hostname = h
	}
	if vm, err := mem.VirtualMemoryWithContext(gopsutilContext(ctx, o)); err == nil && vm.Total > 0 {
		a.Memory = int64(vm.Total)
	}
	return a
}

// gopsutilContext points gopsutil's Linux readers at Options.Root. Other
// platforms ignore these keys.
func gopsutilContext(ctx context.Context, o Options) context.Context {
	root := o.root()
	if root == "/" {
		return ctx
	}
	return context.WithValue(ctx, common.EnvKey, common.EnvMap{
		common.HostProcEnvKey: filepath.Join(root, "proc"),
		common.HostSysEnvKey:  filepath.Join(root, "sys"),
		common.HostEtcEnvKey:  filepath.Join(root, "etc"),
		common.HostRunEnvKey:  filepath.Join(root, "run"),
		common.HostRootEnvKey: root,
	})
}
