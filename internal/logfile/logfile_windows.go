package logfile

import "io/fs"

// noFollow: os.OpenFile on Windows opens a symbolic link's target; the
// log directory's ACL (Administrators and SYSTEM) is what protects it.
const noFollow = 0

func isSymlinkErr(error) bool { return false }

// checkOwner: file owners are checked through the directory's ACL on
// Windows (see internal/paths).
func checkOwner(string, fs.FileInfo) error { return nil }
