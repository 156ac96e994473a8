//go:build unix

package installer

import "testing"

// On unix the error is returned (RunWait ends); no os.Exit.
func exitOnOwnReturnCheck(t *testing.T, exited int) {
	if exited != -1 {
		t.Errorf("exit(%d) called on unix", exited)
	}
}
