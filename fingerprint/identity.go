package fingerprint

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrNoMachineID is matched (errors.Is) by every failure to find a usable
// machine identity. The concrete error is an *IdentityError saying which
// source failed and how to configure an explicit one.
var ErrNoMachineID = errors.New("fingerprint: no usable machine ID: set " + DefaultIdentityEnv +
	" (or the configured identity file) to a stable value unique to this machine or container, e.g. the output of uuidgen")

// IdentityError explains why no machine identity could be used.
type IdentityError struct {
	Source string // where we looked, e.g. "os machine ID", "environment KEYGEN_AGENT_MACHINE_ID"
	Reason string // why it was rejected; never contains the value
	Env    string // the identity environment variable in effect
}

func (e *IdentityError) Error() string {
	return fmt.Sprintf("fingerprint: no usable machine ID: %s: %s. "+
		"Configure an explicit identity: set the environment variable %s, or point the agent's identity file at a file "+
		"holding a stable value unique to this machine or container (e.g. the output of uuidgen, kept on a volume); "+
		"in images, empty /etc/machine-id so each instance generates its own",
		e.Source, e.Reason, e.Env)
}

// Is makes errors.Is(err, ErrNoMachineID) true.
func (e *IdentityError) Is(target error) bool { return target == ErrNoMachineID }

// identity is the resolved HMAC key for the machine fingerprint.
type identity struct {
	key    string // raw identity (never leaves the package)
	source string // description, without the value
}

// minExplicitLen is the shortest explicit identity accepted: enough to rule
// out accidental values like "1" or a short hostname.
const minExplicitLen = 16

// resolveIdentity picks the machine identity: explicit env, then explicit
// file, then the validated OS machine ID. An explicit source that is set but
// unusable is an error, never a silent fall-through.
func resolveIdentity(o Options) (identity, error) {
	env := o.identityEnv()
	if v := o.getenv(env); v != "" {
		src := "environment " + env
		if reason := validExplicit(v); reason != "" {
			return identity{}, &IdentityError{Source: src, Reason: reason, Env: env}
		}
		return identity{key: strings.TrimSpace(v), source: src}, nil
	}
	if o.IdentityFile != "" {
		src := "identity file " + o.IdentityFile
		b, err := os.ReadFile(o.IdentityFile)
		if err != nil {
			return identity{}, &IdentityError{Source: src, Reason: describeReadError(err), Env: env}
		}
		v := string(b)
		if reason := validExplicit(v); reason != "" {
			return identity{}, &IdentityError{Source: src, Reason: reason, Env: env}
		}
		return identity{key: strings.TrimSpace(v), source: src}, nil
	}
	raw, src, err := osMachineID(o)
	if err != nil {
		return identity{}, &IdentityError{Source: src, Reason: describeReadError(err), Env: env}
	}
	if reason := validMachineID(raw); reason != "" {
		return identity{}, &IdentityError{Source: src, Reason: reason, Env: env}
	}
	// Keyed by the trimmed raw ID exactly as machineid.ProtectedID does, so
	// the fingerprint equals ProtectedID(appID) and Keygen's examples.
	return identity{key: strings.TrimSpace(raw), source: src}, nil
}

// validExplicit returns why an explicit identity is unusable, or "".
func validExplicit(v string) string {
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return "it is empty"
	case len(v) < minExplicitLen:
		return fmt.Sprintf("it is shorter than %d characters", minExplicitLen)
	case len(v) > 4096:
		return "it is longer than 4096 characters"
	case allSame(v):
		return "it repeats a single character"
	case knownImageIDs[normaliseMachineID(v)]:
		return "it is a machine ID known to be baked into public images"
	}
	return ""
}

func normaliseMachineID(raw string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(raw), "-", ""))
}

// validMachineID returns why an OS machine ID is unusable, or "".
func validMachineID(raw string) string {
	id := normaliseMachineID(raw)
	switch {
	case id == "":
		return "it is empty (typical of minimal containers)"
	case id == "uninitialized":
		return "it is \"uninitialized\" (first boot not completed)"
	case !isHex(id):
		return "it is not hexadecimal"
	case len(id) < 32:
		return "it is shorter than 32 hex digits"
	case allSame(id):
		return "it repeats a single digit (placeholder)"
	case knownImageIDs[id]:
		return "it is a machine ID known to be baked into public images, shared by every instance"
	}
	return ""
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// knownImageIDs are machine IDs shipped inside widely used images, so every
// container or clone from them shares the ID. Grow it as reports come in.
var knownImageIDs = map[string]bool{
	"88544b92092430bc5d3fbbffc12a2f04": true, // debian:11.2 / 11.2-slim docker images (debuerreotype/docker-debian-artifacts#151)
	"85f94e57ab75f80918cab17d001eac85": true, // debian:11.1 docker image (same issue)
	"3766705eb195582e8168a9a1b913c7c7": true, // quay.io/footloose/debian10 (weaveworks/footloose#280)
	"cdb7f92199c748a7a20d33ab52974cbb": true, // official Debian 8.1.0 OpenStack images (hartwork/image-bootstrap#13)
}

// describeReadError turns a file error into a reason that says what to do.
func describeReadError(err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "not found (" + err.Error() + ")"
	case errors.Is(err, os.ErrPermission):
		return "permission denied (" + err.Error() + "; needs root)"
	}
	return err.Error()
}
