package ipc

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestMethodsDocumented checks the method constants against the lists in
// docs/protocol.md (headings "### `name`" under "## Methods" and
// "## Notifications").
func TestMethodsDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	section := func(title string) []string {
		i := strings.Index(doc, "\n## "+title+"\n")
		if i < 0 {
			t.Fatalf("no section %q", title)
		}
		rest := doc[i+len(title)+5:]
		if j := strings.Index(rest, "\n## "); j >= 0 {
			rest = rest[:j]
		}
		var names []string
		for _, m := range regexp.MustCompile("(?m)^### `([a-z.]+)`").FindAllStringSubmatch(rest, -1) {
			names = append(names, m[1])
		}
		slices.Sort(names)
		return names
	}
	want := slices.Sorted(slices.Values(Methods))
	if got := section("Methods"); !slices.Equal(got, want) {
		t.Errorf("documented methods %v, constants %v", got, want)
	}
	want = slices.Sorted(slices.Values(Notifications))
	if got := section("Notifications"); !slices.Equal(got, want) {
		t.Errorf("documented notifications %v, constants %v", got, want)
	}
	for code := range rpcCodes {
		if !strings.Contains(doc, "`"+code+"`") {
			t.Errorf("error code %s not documented", code)
		}
	}
}
