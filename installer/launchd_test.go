package installer

import "testing"

func TestLaunchdDomain(t *testing.T) {
	var asked []string
	exists := func(ok bool) func(string) bool {
		return func(d string) bool { asked = append(asked, d); return ok }
	}
	if d := launchdDomain(false, 501, exists(true)); d != "system" || len(asked) != 0 {
		t.Errorf("system: %q (asked %v)", d, asked)
	}
	if d := launchdDomain(true, 501, exists(true)); d != "gui/501" {
		t.Errorf("GUI session: %q", d)
	}
	// Over SSH there is no gui/<uid> domain (issue 17 item 11).
	if d := launchdDomain(true, 501, exists(false)); d != "user/501" {
		t.Errorf("SSH session: %q", d)
	}
	if asked[len(asked)-1] != "gui/501" {
		t.Errorf("asked about %v", asked)
	}
}
