//go:build unix && !linux && !darwin && !freebsd

package ipc

// serverCred fails closed where peer credentials are not implemented: a
// client there trusts no server it cannot identify.
func serverCred(int) (uid uint32, pid int, err error) {
	return 0, 0, ErrPeerCredentialsUnsupported
}
