package installer

import (
	"strings"
	"testing"
)

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

// The launchd job's output is bounded: the agent writes its own rotated
// log (run --log-file) and launchd's StandardOutPath/StandardErrorPath is
// a separate file the agent cuts at start (--stderr-file); custom
// arguments are not extended.
func TestLaunchdLogFiles(t *testing.T) {
	for _, user := range []bool{false, true} {
		p := goldenPlan(t, "darwin", user)
		dir := "/Library/Logs/keygen-agent"
		if user {
			dir = "/Users/alice/Library/Logs/keygen-agent"
		}
		log, errf := dir+"/keygen-agent.log", dir+"/keygen-agent.stderr.log"
		args := strings.Join(p.Service.Arguments, " ")
		if !strings.HasSuffix(args, " --log-file "+log+" --stderr-file "+errf) || !strings.HasPrefix(args, "run --config ") {
			t.Errorf("user=%v: arguments %q", user, args)
		}
		for _, key := range []string{"StandardOutPath", "StandardErrorPath"} {
			want := "<key>" + key + "</key>\n\t<string>" + errf + "</string>"
			if !strings.Contains(p.ServiceText, want) {
				t.Errorf("user=%v: plist lacks %q", user, want)
			}
		}
		if strings.Count(p.ServiceText, "<string>"+log+"</string>") != 1 {
			t.Errorf("user=%v: the agent's log should appear once (as --log-file's value):\n%s", user, p.ServiceText)
		}
	}
	p, err := NewPlan(Options{OS: "darwin", Executable: "/usr/local/bin/wrapper", Home: "/Users/alice",
		Getenv: fakeEnv(nil), Args: []string{"serve", "--x"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Service.Arguments, " "); got != "serve --x" {
		t.Errorf("custom arguments changed: %q", got)
	}
	// Re-planning with the flags already given does not add them twice.
	p, err = NewPlan(Options{OS: "darwin", Executable: "/usr/local/bin/keygen-agent", Home: "/Users/alice",
		Getenv: fakeEnv(nil), Args: []string{"run", "--log-file", "/tmp/x.log"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Service.Arguments, " "); got != "run --log-file /tmp/x.log" {
		t.Errorf("arguments with --log-file changed: %q", got)
	}
}
