package ipc

import "fmt"

// Named-pipe access rights (winnt.h). For a pipe, FILE_APPEND_DATA is
// FILE_CREATE_PIPE_INSTANCE: whoever holds it can create further server
// instances of the pipe and so receive clients' connections.
const (
	pipeReadData            = 0x0001 // FILE_READ_DATA
	pipeWriteData           = 0x0002 // FILE_WRITE_DATA
	pipeCreateInstance      = 0x0004 // FILE_CREATE_PIPE_INSTANCE (= FILE_APPEND_DATA)
	pipeReadAttributes      = 0x0080 // FILE_READ_ATTRIBUTES
	pipeWriteAttributes     = 0x0100 // FILE_WRITE_ATTRIBUTES (set pipe mode)
	pipeReadControl         = 0x20000
	pipeSynchronize         = 0x100000
	pipeReadEA, pipeWriteEA = 0x0008, 0x0010

	// pipeClientRights is FILE_GENERIC_READ | FILE_GENERIC_WRITE without
	// FILE_CREATE_PIPE_INSTANCE (0x12019b): what a client needs to open
	// the pipe for reading and writing and set its read mode.
	pipeClientRights = pipeReadData | pipeWriteData | pipeReadEA | pipeWriteEA |
		pipeReadAttributes | pipeWriteAttributes | pipeReadControl | pipeSynchronize
)

// pipeSDDL returns the named pipe's security descriptor for an agent
// running as owner (a SID string):
//
//	D:P              a protected DACL (no inherited entries)
//	(D;;GA;;;NU)     deny everything to NETWORK logons (belt and braces:
//	                 go-winio also sets PIPE_REJECT_REMOTE_CLIENTS)
//	(A;;GA;;;SY)     full control to LocalSystem (the service)
//	(A;;GA;;;BA)     full control to BUILTIN\Administrators
//	(A;;GA;;;owner)  full control to the agent's own account, so an agent
//	                 run by a standard user can create its further instances
//	(A;;0x12019b;;;AU) read and write to Authenticated Users (apps), but not
//	                 FILE_CREATE_PIPE_INSTANCE: "GW" would include it, and a
//	                 standard user could then open competing server ends;
//	                 admin methods are still decided from the caller's token
func pipeSDDL(owner string) string {
	s := "D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)"
	if owner != "" && owner != "S-1-5-18" {
		s += "(A;;GA;;;" + owner + ")"
	}
	return s + fmt.Sprintf("(A;;%#x;;;AU)", pipeClientRights)
}
