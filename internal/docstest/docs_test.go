package docstest

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// root is the repository root, relative to this package's directory.
const root = "../.."

// decls is what the module declares: function and method names, per
// package directory (slash-separated, relative to the root) and per
// receiver type.
type decls struct {
	funcs   map[string]map[string]bool // dir -> function or method names
	methods map[string]map[string]bool // receiver type -> method names
	dirs    map[string][]string        // package name (last path element) -> dirs
}

// reFunc matches a declaration: "func Name(", "func Name[T any](",
// "func (r *Type) Name(", "func (r Type[K]) Name(".
var reFunc = regexp.MustCompile(`(?m)^func\s+(?:\(\s*\w*\s*\*?(\w+)(?:\[[^\]]*\])?\s*\)\s*)?(\w+)\s*[\[(]`)

// scan reads every .go file of the module (tests included: the document
// may cite test helpers), skipping testdata and hidden directories.
func scan(t *testing.T, dir string) decls {
	t.Helper()
	d := decls{funcs: map[string]map[string]bool{}, methods: map[string]map[string]bool{}, dirs: map[string][]string{}}
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if path != dir && (e.Name() == "testdata" || strings.HasPrefix(e.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		if d.funcs[rel] == nil {
			d.funcs[rel] = map[string]bool{}
			name := rel[strings.LastIndex(rel, "/")+1:]
			d.dirs[name] = append(d.dirs[name], rel)
		}
		for _, m := range reFunc.FindAllStringSubmatch(string(b), -1) {
			d.funcs[rel][m[2]] = true
			if m[1] != "" {
				if d.methods[m[1]] == nil {
					d.methods[m[1]] = map[string]bool{}
				}
				d.methods[m[1]][m[2]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// declared reports whether a reference written as `name()`, `pkg.Name()`,
// `Type.Method()` or `pkg.Type.Method()` names a declaration.
func (d decls) declared(ref string) bool {
	parts := strings.Split(ref, ".")
	name := parts[len(parts)-1]
	switch len(parts) {
	case 1:
		for _, fs := range d.funcs {
			if fs[name] {
				return true
			}
		}
		return false
	case 2:
		if dirs, ok := d.dirs[parts[0]]; ok {
			for _, dir := range dirs {
				if d.funcs[dir][name] {
					return true
				}
			}
		}
		return d.methods[parts[0]][name]
	case 3:
		if _, ok := d.dirs[parts[0]]; !ok {
			return false
		}
		return d.methods[parts[1]][name]
	}
	return false
}

var (
	reCall = regexp.MustCompile("`((?:[A-Za-z_]\\w*\\.){0,2}[A-Za-z_]\\w*)\\(\\)`")
	reCode = regexp.MustCompile("`([^`\\s]+)`")
	reLink = regexp.MustCompile(`\]\(([^)#\s]+)(?:#[^)]*)?\)`)
)

// problems lists what in doc does not match the module at dir.
func problems(t *testing.T, doc, dir string) []string {
	t.Helper()
	d := scan(t, dir)
	var out []string
	for _, m := range reCall.FindAllStringSubmatch(doc, -1) {
		if !d.declared(m[1]) {
			out = append(out, "no declaration for `"+m[1]+"()`")
		}
	}
	// Paths: a code span or link whose first element is a top-level entry
	// of the repository must exist (globs allowed).
	var paths []string
	for _, m := range reCode.FindAllStringSubmatch(doc, -1) {
		paths = append(paths, m[1])
	}
	for _, m := range reLink.FindAllStringSubmatch(doc, -1) {
		if !strings.Contains(m[1], "://") {
			paths = append(paths, m[1])
		}
	}
	for _, p := range paths {
		first, _, _ := strings.Cut(p, "/")
		if first == "" || strings.ContainsAny(first, "()") {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, first)); err != nil || (!strings.Contains(p, "/") && !strings.Contains(p, ".")) {
			continue
		}
		matches, _ := filepath.Glob(filepath.Join(dir, filepath.FromSlash(p)))
		if len(matches) == 0 {
			out = append(out, "no file or directory "+p)
		}
	}
	// Every package has its own entry: its directory in backticks.
	spans := map[string]bool{}
	for _, m := range reCode.FindAllStringSubmatch(doc, -1) {
		spans[m[1]] = true
	}
	for pkg := range d.funcs {
		if pkg != "." && !spans[pkg] {
			out = append(out, "package "+pkg+" is not described (no `"+pkg+"`)")
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestArchitectureMatchesCode: ARCHITECTURE.md names only functions and
// paths that exist, and describes every package.
func TestArchitectureMatchesCode(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems(t, string(b), root) {
		t.Error("ARCHITECTURE.md: " + p)
	}
	if n := len(reCall.FindAllString(string(b), -1)); n < 50 {
		t.Errorf("ARCHITECTURE.md names only %d functions; the check would be vacuous", n)
	}
}

// TestCheckerSeesRot: the checker flags a renamed function, a wrong
// receiver, a missing file and an undescribed package, so a bug in it
// cannot make TestArchitectureMatchesCode pass vacuously.
func TestCheckerSeesRot(t *testing.T) {
	dir := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("agent/leases.go", "package agent\n\nfunc (a *Agent) acquire() {}\nfunc New() {}\ntype leaseTable struct{}\nfunc (t *leaseTable) reserve() {}\n")
	write("agent/heartbeat/heartbeat.go", "package heartbeat\n\nfunc (s *Scheduler[K]) Set(k K) {}\n")
	write("ipc/server.go", "package ipc\n\nfunc Listen() {}\n")
	write("ipc/testdata/skip.go", "package skip\n\nfunc Hidden() {}\n")
	good := "`agent` `agent/heartbeat` `ipc` `acquire()` `agent.New()` `leaseTable.reserve()` " +
		"`agent.leaseTable.reserve()` `Scheduler.Set()` `ipc.Listen()` `agent/leases.go` [x](ipc/server.go) `/run/x.sock`"
	if got := problems(t, good, dir); len(got) != 0 {
		t.Errorf("a correct document is flagged: %q", got)
	}
	for _, tc := range []struct{ doc, want string }{
		{"`agent` `agent/heartbeat` `ipc` `release()`", "no declaration for `release()`"},
		{"`agent` `agent/heartbeat` `ipc` `ipc.New()`", "no declaration for `ipc.New()`"},
		{"`agent` `agent/heartbeat` `ipc` `seat.reserve()`", "no declaration for `seat.reserve()`"},
		{"`agent` `agent/heartbeat` `ipc` `Hidden()`", "no declaration for `Hidden()`"},
		{"`agent` `agent/heartbeat` `ipc` `agent/lease.go`", "no file or directory agent/lease.go"},
		{"`agent` `agent/heartbeat` `ipc` [y](ipc/client.go)", "no file or directory ipc/client.go"},
		{"`agent` `ipc`", "package agent/heartbeat is not described (no `agent/heartbeat`)"},
	} {
		if got := problems(t, tc.doc, dir); !slices.Contains(got, tc.want) {
			t.Errorf("%s: got %q, want %q among them", tc.doc, got, tc.want)
		}
	}
}
