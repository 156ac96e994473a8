package installer

import (
	"strings"
	"testing"
)

func TestTrustedOwner(t *testing.T) {
	for sid, want := range map[string]bool{
		"S-1-5-18":                     true,
		"S-1-5-32-544":                 true,
		sidTrustedInstall:              true,
		"S-1-5-21-1111-2222-3333-1001": false, // a standard user who pre-created the directory
		"S-1-5-32-545":                 false, // BUILTIN\Users
		"S-1-1-0":                      false, // Everyone
		"":                             false,
	} {
		if got := TrustedOwner(sid); got != want {
			t.Errorf("TrustedOwner(%q) = %v, want %v", sid, got, want)
		}
	}
}

// The directory DACLs carry an OWNER RIGHTS entry without WRITE_DAC, so the
// owner's implicit right to rewrite the DACL is gone (issue 17 item 3).
func TestWindowsDirSDDLOwnerRights(t *testing.T) {
	for _, s := range []string{sddlPrivate, sddlReadable} {
		i := strings.Index(s, ";;;OW)")
		if i < 0 {
			t.Fatalf("%s: no OWNER RIGHTS entry", s)
		}
		ace := s[strings.LastIndex(s[:i], "(") : i+6]
		if strings.Contains(ace, "FA") || strings.Contains(ace, "WD") || strings.Contains(ace, "GA") {
			t.Errorf("OWNER RIGHTS entry %s grants full control or WRITE_DAC", ace)
		}
		if !strings.HasPrefix(s, "O:BA") {
			t.Errorf("%s does not set the owner to Administrators", s)
		}
	}
}
