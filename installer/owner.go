package installer

// Well-known SIDs that may own the agent's Windows directories and files.
const (
	sidSystem         = "S-1-5-18"
	sidAdministrators = "S-1-5-32-544"
	sidTrustedInstall = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
)

// TrustedOwner reports whether a Windows security principal (a SID string)
// may own the agent's data or config directory. The owner of an object may
// always rewrite its DACL, so a directory a standard user created before
// the install (C:\ProgramData is writable by Users) would let that user
// re-grant themselves the license key and the config the LocalSystem
// service trusts.
func TrustedOwner(sid string) bool {
	switch sid {
	case sidSystem, sidAdministrators, sidTrustedInstall:
		return true
	}
	return false
}

// Windows has no modes: unix-style modes from the plan map onto explicit,
// protected (non-inherited) DACLs.
const (
	// sddlPrivate: O:BA the owner is Administrators; D: DACL, P: protected
	// from inheritance; (A;OICI;FA;;;SY) full access for LocalSystem,
	// inherited by children; (A;OICI;FA;;;BA) the same for Administrators;
	// (A;OICI;FR;;;OW) OWNER RIGHTS: whoever owns an entry gets read only,
	// instead of the implicit right to rewrite its DACL.
	sddlPrivate = "O:BAD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FR;;;OW)"
	// sddlReadable adds (A;OICI;GRGX;;;BU): read and traverse for Users.
	sddlReadable = sddlPrivate + "(A;OICI;GRGX;;;BU)"
)
