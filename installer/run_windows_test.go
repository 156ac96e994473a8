package installer

import "testing"

// On Windows the SCM loop cannot be left: the process exits 1.
func exitOnOwnReturnCheck(t *testing.T, exited int) {
	if exited != 1 {
		t.Errorf("exit code %d, want 1", exited)
	}
}
