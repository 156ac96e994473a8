package deptest

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/keygen-agent/keygen-agent"

// banned lists, per package of this module, the packages it must never
// import, directly or through others (tests excluded: `go list -deps`
// without -test). An entry ending in "/..." bans a module or a tree.
var banned = map[string][]string{
	// Apps link the client: none of the daemon may come with it.
	"ipc": {"agent/...", "cache/...", "keygen/...", "installer/...", "fingerprint/...",
		"go.etcd.io/bbolt/...", "github.com/shirou/gopsutil/...", "github.com/kardianos/service/..."},
	// The Keygen client is a library of the wire format, not of the agent.
	"keygen": {"agent/...", "cache/...", "ipc/...", "go.etcd.io/bbolt/..."},
	// The cache stores what it is given.
	"cache":       {"keygen/...", "agent/...", "ipc/..."},
	"fingerprint": {"agent/...", "ipc/...", "cache/..."},
	"installer":   {"agent/...", "ipc/...", "cache/...", "keygen/..."},
	// The dev server stands for Keygen: independent of the client it tests
	// and of the agent.
	"keygen/devserver": {"keygen", "agent/...", "ipc/...", "cache/..."},
	// The agent talks to Keygen only through the client; the dev server is
	// for tests and `dev`.
	"agent": {"keygen/devserver/..."},
}

// goosList is every OS the module builds for; ipc also on the BSDs.
var goosList = []string{"linux", "darwin", "windows", "freebsd"}

func TestDeps(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not available")
	}
	for _, goos := range goosList {
		deps := listDeps(t, gobin, goos)
		for pkg, bans := range banned {
			full := mod + "/" + pkg
			d, ok := deps[full]
			if !ok {
				if goos != "freebsd" {
					t.Errorf("GOOS=%s: package %s not found by go list", goos, full)
				}
				continue
			}
			for _, dep := range d {
				for _, b := range bans {
					if matches(dep, b) {
						t.Errorf("GOOS=%s: %s imports %s (banned: %s)", goos, pkg, dep, b)
					}
				}
			}
		}
	}
}

// listDeps maps each package of the module to its transitive imports.
func listDeps(t *testing.T, gobin, goos string) map[string][]string {
	t.Helper()
	cmd := exec.Command(gobin, "list", "-e", "-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}", "./...")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list (GOOS=%s): %v", goos, err)
	}
	m := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) > 0 {
			m[f[0]] = f[1:]
		}
	}
	return m
}

// matches reports whether dep is ban: a package of this module named
// relative to it ("keygen", "agent/..."), or a full path.
func matches(dep, ban string) bool {
	if !strings.Contains(strings.SplitN(ban, "/", 2)[0], ".") {
		ban = mod + "/" + ban
	}
	if tree, ok := strings.CutSuffix(ban, "/..."); ok {
		return dep == tree || strings.HasPrefix(dep, tree+"/")
	}
	return dep == ban
}

// TestDepsRulesSeeViolations: the checker flags what it should, so a typo
// in a rule cannot make TestDeps pass vacuously.
func TestDepsRulesSeeViolations(t *testing.T) {
	for _, tc := range []struct {
		dep, ban string
		want     bool
	}{
		{mod + "/agent", "agent/...", true},
		{mod + "/agent/budget", "agent/...", true},
		{mod + "/agentx", "agent/...", false},
		{mod + "/keygen", "keygen", true},
		{mod + "/keygen/devserver", "keygen", false},
		{"go.etcd.io/bbolt", "go.etcd.io/bbolt/...", true},
		{"go.etcd.io/bbolt/errors", "go.etcd.io/bbolt/...", true},
	} {
		if got := matches(tc.dep, tc.ban); got != tc.want {
			t.Errorf("matches(%q, %q) = %v", tc.dep, tc.ban, got)
		}
	}
	for pkg := range banned {
		if slices.Contains(banned[pkg], pkg) {
			t.Errorf("%s bans itself", pkg)
		}
	}
}
