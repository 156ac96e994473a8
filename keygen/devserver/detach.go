package devserver

import "slices"

// DetachEntitlements removes entitlements (by code) from a license, as
// DELETE /licenses/{id}/entitlements does in Keygen; it reports whether
// every code was attached.
func (s *Server) DetachEntitlements(licenseID string, codes ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := true
	for _, code := range codes {
		e := s.entitlementByCode(code)
		if e == nil {
			all = false
			continue
		}
		i := slices.Index(s.licenseEnts[licenseID], e.ID)
		if i < 0 {
			all = false
			continue
		}
		s.licenseEnts[licenseID] = slices.Delete(s.licenseEnts[licenseID], i, i+1)
	}
	return all
}
