package ipc

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// sddlACE is one access-control entry of an SDDL string.
type sddlACE struct {
	typ  string // "A" allow, "D" deny
	mask uint32 // generic rights mapped to a pipe's specific rights
	sid  string
}

// File/pipe generic mapping (FILE_GENERIC_*), used to expand the rights
// strings of an SDDL ACE.
var sddlRights = map[string]uint32{
	"GA": 0x1f01ff, "GR": 0x120089, "GW": 0x120116, "GX": 0x1200a0,
	"FA": 0x1f01ff, "FR": 0x120089, "FW": 0x120116, "FX": 0x1200a0,
	"RC": 0x20000, "SD": 0x10000, "WD": 0x40000, "WO": 0x80000,
}

// parseDACL parses the "D:" part of an SDDL string.
func parseDACL(s string) ([]sddlACE, error) {
	i := strings.Index(s, "D:")
	if i < 0 {
		return nil, fmt.Errorf("no DACL in %q", s)
	}
	s = s[i+2:]
	s = strings.TrimLeft(s, "PAIR") // DACL flags
	var out []sddlACE
	for s != "" {
		if s[0] != '(' {
			break // another component (S:)
		}
		end := strings.IndexByte(s, ')')
		if end < 0 {
			return nil, fmt.Errorf("unclosed ACE in %q", s)
		}
		f := strings.Split(s[1:end], ";")
		s = s[end+1:]
		if len(f) != 6 {
			return nil, fmt.Errorf("ACE %q has %d fields", f, len(f))
		}
		a := sddlACE{typ: f[0], sid: f[5]}
		if strings.HasPrefix(f[2], "0x") {
			v, err := strconv.ParseUint(f[2][2:], 16, 32)
			if err != nil {
				return nil, fmt.Errorf("ACE rights %q: %w", f[2], err)
			}
			a.mask = uint32(v)
		} else {
			for r := f[2]; r != ""; r = r[2:] {
				if len(r) < 2 || sddlRights[r[:2]] == 0 {
					return nil, fmt.Errorf("unknown right in %q", f[2])
				}
				a.mask |= sddlRights[r[:2]]
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// TestPipeSDDLNoCreateInstanceForUsers pins issue 17 item 1: Authenticated
// Users may read and write the pipe but not create instances of it.
func TestPipeSDDLNoCreateInstanceForUsers(t *testing.T) {
	const owner = "S-1-5-21-1-2-3-1001"
	for _, sddl := range []string{pipeSDDL(owner), pipeSDDL("S-1-5-18")} {
		aces, err := parseDACL(sddl)
		if err != nil {
			t.Fatal(err)
		}
		privileged := map[string]bool{"SY": true, "BA": true, owner: true}
		var sawUsers bool
		for _, a := range aces {
			if a.typ != "A" {
				continue
			}
			if privileged[a.sid] {
				continue
			}
			if a.mask&pipeCreateInstance != 0 {
				t.Errorf("%s: %s may create pipe instances (mask %#x)", sddl, a.sid, a.mask)
			}
			if a.mask&(0x40000|0x80000|0x10000) != 0 {
				t.Errorf("%s: %s may change the pipe's DACL, owner or delete it (mask %#x)", sddl, a.sid, a.mask)
			}
			if a.sid == "AU" {
				sawUsers = true
				if want := uint32(pipeReadData | pipeWriteData | pipeSynchronize | pipeReadAttributes | pipeWriteAttributes); a.mask&want != want {
					t.Errorf("%s: Authenticated Users lack read/write rights: %#x", sddl, a.mask)
				}
			}
		}
		if !sawUsers {
			t.Errorf("%s: no entry for Authenticated Users", sddl)
		}
	}
	if got := pipeClientRights; got != 0x12019b {
		t.Errorf("client rights %#x, want 0x12019b", got)
	}
	if strings.Contains(pipeSDDL("S-1-5-18"), "S-1-5-18") {
		t.Error("LocalSystem owner duplicated as an explicit entry")
	}
	if !strings.Contains(pipeSDDL(owner), "(A;;GA;;;"+owner+")") {
		t.Error("the agent's own account cannot create its instances")
	}
}

// The parser itself must see the defect the old descriptor had.
func TestParseDACLSeesGenericWrite(t *testing.T) {
	aces, err := parseDACL("D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;AU)")
	if err != nil {
		t.Fatal(err)
	}
	if m := aces[3].mask; m&pipeCreateInstance == 0 {
		t.Fatalf("GRGW parsed as %#x, without FILE_CREATE_PIPE_INSTANCE", m)
	}
}

func TestServerTrust(t *testing.T) {
	tr := trustFor("1000", "0", []string{"501"})
	for u, want := range map[string]bool{"0": true, "1000": true, "501": true, "1001": false, "": false} {
		if got := tr.allows(u); got != want {
			t.Errorf("allows(%q) = %v, want %v", u, got, want)
		}
	}
	if (serverTrust{}).allows("") {
		t.Error("an empty trust allows an unknown user")
	}
}

// TestPipeSDDLDocumented keeps the descriptor quoted in SECURITY.md and
// docs/protocol.md equal to the service's (LocalSystem's) pipeSDDL.
func TestPipeSDDLDocumented(t *testing.T) {
	want := pipeSDDL("S-1-5-18")
	for _, f := range []string{"../SECURITY.md", "../docs/protocol.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		doc := string(b)
		if !strings.Contains(doc, "`"+want+"`") {
			t.Errorf("%s does not quote the pipe's descriptor `%s`", f, want)
		}
		for _, m := range regexp.MustCompile(`D:P\([^\x60\s]*`).FindAllString(doc, -1) {
			if m != want {
				t.Errorf("%s quotes the pipe descriptor %s, want %s", f, m, want)
			}
		}
	}
}
