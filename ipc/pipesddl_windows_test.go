package ipc

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/windows"
)

// TestPipeSDDLParsesToMasks converts the descriptor with the OS's own SDDL
// parser and checks the Authenticated Users entry's access mask.
func TestPipeSDDLParsesToMasks(t *testing.T) {
	u, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		t.Fatal(err)
	}
	sd, err := windows.SecurityDescriptorFromString(pipeSDDL(u.User.Sid.String()))
	if err != nil {
		t.Fatal(err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		t.Fatal(err)
	}
	au, err := windows.CreateWellKnownSid(windows.WinAuthenticatedUserSid)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i := uint32(0); i < uint32(dacl.AceCount); i++ {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			t.Fatal(err)
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE || !sid.Equals(au) {
			continue
		}
		found = true
		if ace.Mask&pipeCreateInstance != 0 {
			t.Errorf("Authenticated Users may create pipe instances: mask %#x", ace.Mask)
		}
		if ace.Mask != pipeClientRights {
			t.Errorf("Authenticated Users mask %#x, want %#x", ace.Mask, pipeClientRights)
		}
	}
	if !found {
		t.Fatal("no allow entry for Authenticated Users")
	}
}
