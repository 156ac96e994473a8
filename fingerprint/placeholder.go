package fingerprint

import "strings"

// placeholders are values firmware vendors leave in DMI/SMBIOS fields
// instead of a real serial or UUID. They are shared by many machines, so
// they must not become components. Compared case-insensitively after
// trimming.
var placeholders = map[string]bool{
	"":                                     true,
	"none":                                 true,
	"n/a":                                  true,
	"na":                                   true,
	"null":                                 true,
	"unknown":                              true,
	"invalid":                              true,
	"oem":                                  true,
	"o.e.m.":                               true,
	"to be filled by o.e.m.":               true,
	"to be filled by oem":                  true,
	"default string":                       true,
	"not specified":                        true,
	"not applicable":                       true,
	"not available":                        true,
	"not settable":                         true,
	"not present":                          true,
	"system serial number":                 true,
	"base board serial number":             true,
	"chassis serial number":                true,
	"serial number":                        true,
	"serial":                               true,
	"0123456789":                           true,
	"123456789":                            true,
	"1234567890":                           true,
	"03000200-0400-0500-0006-000700080009": true, // common AMI placeholder UUID
}

// isPlaceholder reports whether v is empty, a known placeholder, or one
// character repeated (all zeros, all F, all X, all spaces or dots).
func isPlaceholder(v string) bool {
	s := strings.ToLower(strings.TrimSpace(v))
	if placeholders[s] {
		return true
	}
	t := strings.NewReplacer("-", "", " ", "", ":", "", ".", "").Replace(s)
	return allSame(t)
}

// allSame reports whether s is empty or one byte repeated.
func allSame(s string) bool {
	for i := 1; i < len(s); i++ {
		if s[i] != s[0] {
			return false
		}
	}
	return true
}
