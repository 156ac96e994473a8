package paths

// SecureDir is a no-op on Windows: the installer sets and checks the owner
// and the DACL of the directories it creates (installer/perms_windows.go).
func SecureDir(dir string) error { return nil }

// OpenFlagNoFollow is 0 on Windows, where os.OpenFile does not follow
// reparse points the way unix follows symbolic links.
const OpenFlagNoFollow = 0
