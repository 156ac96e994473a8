package fingerprint

import (
	"reflect"
	"testing"
)

func TestPasses(t *testing.T) {
	type row struct {
		matched, supplied   int
		any, two, most, all bool
	}
	rows := []row{
		{0, 5, false, false, false, false},
		{1, 5, true, false, false, false},
		{2, 5, true, true, false, false},
		{3, 5, true, true, true, false}, // ceil(5/2) = 3
		{5, 5, true, true, true, true},
		{1, 1, true, false, true, true},
		{1, 2, true, false, true, false}, // ceil(2/2) = 1
		{2, 4, true, true, true, false},
		{1, 4, true, false, false, false},
		{0, 0, false, false, false, false}, // nothing supplied never passes
		{6, 5, false, false, false, false}, // impossible input
	}
	for _, r := range rows {
		for s, want := range map[string]bool{MatchAny: r.any, MatchTwo: r.two, MatchMost: r.most, MatchAll: r.all} {
			if got := Passes(s, r.matched, r.supplied); got != want {
				t.Errorf("Passes(%s, %d, %d) = %v, want %v", s, r.matched, r.supplied, got, want)
			}
		}
	}
	if !Passes("", 1, 3) {
		t.Error("empty strategy (null) must behave as MATCH_ANY")
	}
	if Passes("MATCH_SOME", 3, 3) {
		t.Error("unknown strategy passed")
	}
}

func TestCompare(t *testing.T) {
	c := func(name, fp string) Component { return Component{Name: name, Fingerprint: fp} }
	recorded := []Component{c("system-uuid", "u"), c("baseboard-serial", "b"), c("cpu", "c"), c("disk-0", "d0"), c("disk-1", "d1"), c("nic-0", "n0")}
	cases := []struct {
		name                             string
		current                          []Component
		matched, changed, added, missing []string
		pass                             map[string]bool
	}{
		{"identical", recorded,
			[]string{"system-uuid", "baseboard-serial", "cpu", "disk-0", "disk-1", "nic-0"}, nil, nil, nil,
			map[string]bool{MatchAny: true, MatchTwo: true, MatchMost: true, MatchAll: true}},
		{"new board: uuid and serial changed, disk and NIC kept",
			[]Component{c("system-uuid", "U"), c("baseboard-serial", "B"), c("cpu", "c"), c("disk-0", "d0"), c("disk-1", "d1"), c("nic-0", "n0")},
			[]string{"cpu", "disk-0", "disk-1", "nic-0"}, []string{"system-uuid", "baseboard-serial"}, nil, nil,
			map[string]bool{MatchAny: true, MatchTwo: true, MatchMost: true, MatchAll: false}},
		{"disk removed: disk-1 renumbered to disk-0 still matches",
			[]Component{c("system-uuid", "u"), c("baseboard-serial", "b"), c("cpu", "c"), c("disk-0", "d1"), c("nic-0", "n0")},
			[]string{"system-uuid", "baseboard-serial", "cpu", "disk-0", "nic-0"}, nil, nil, []string{"disk-0"},
			map[string]bool{MatchAny: true, MatchTwo: true, MatchMost: true, MatchAll: true}},
		{"NIC added",
			append(append([]Component{}, recorded...), c("nic-1", "n1")),
			[]string{"system-uuid", "baseboard-serial", "cpu", "disk-0", "disk-1", "nic-0"}, nil, []string{"nic-1"}, nil,
			map[string]bool{MatchAny: true, MatchTwo: true, MatchMost: true, MatchAll: false}},
		{"cloned VM: only the CPU model matches",
			[]Component{c("system-uuid", "x1"), c("cpu", "c"), c("disk-0", "x2"), c("nic-0", "x3"), c("nic-1", "x4")},
			[]string{"cpu"}, []string{"system-uuid", "disk-0", "nic-0"}, []string{"nic-1"}, []string{"baseboard-serial", "disk-1"},
			map[string]bool{MatchAny: true, MatchTwo: false, MatchMost: false, MatchAll: false}},
		{"two of four match: MATCH_MOST passes at exactly half",
			[]Component{c("system-uuid", "u"), c("cpu", "c"), c("disk-0", "z"), c("nic-0", "y")},
			[]string{"system-uuid", "cpu"}, []string{"disk-0", "nic-0"}, nil, []string{"baseboard-serial", "disk-1"},
			map[string]bool{MatchAny: true, MatchTwo: true, MatchMost: true, MatchAll: false}},
		{"nothing current", nil, nil, nil, nil, []string{"system-uuid", "baseboard-serial", "cpu", "disk-0", "disk-1", "nic-0"},
			map[string]bool{MatchAny: false, MatchTwo: false, MatchMost: false, MatchAll: false}},
	}
	norm := func(s []string) []string {
		if len(s) == 0 {
			return nil
		}
		return s
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Compare(recorded, tc.current)
			for _, f := range []struct {
				what      string
				got, want []string
			}{{"matched", got.Matched, tc.matched}, {"changed", got.Changed, tc.changed}, {"added", got.Added, tc.added}, {"missing", got.Missing, tc.missing}} {
				if !reflect.DeepEqual(norm(f.got), norm(f.want)) {
					t.Errorf("%s = %v, want %v", f.what, f.got, f.want)
				}
			}
			if !reflect.DeepEqual(got.Pass, tc.pass) {
				t.Errorf("pass = %v, want %v (matched %d of %d)", got.Pass, tc.pass, got.MatchedCount, got.Supplied)
			}
			for _, n := range tc.matched {
				if got.Status(n) != "match" {
					t.Errorf("Status(%s) = %q", n, got.Status(n))
				}
			}
		})
	}
}
