package ipc

import (
	"errors"
	"testing"
	"time"
)

func TestInAdminGroup(t *testing.T) {
	// Sixteen groups, as LOCAL_PEERCRED hands over at most; the admin
	// group 80 is the user's 17th.
	peer := make([]uint32, 16)
	for i := range peer {
		peer[i] = uint32(100 + i)
	}
	var asked []string
	lookup := func(uid string) ([]string, error) {
		asked = append(asked, uid)
		switch uid {
		case "501":
			return []string{"20", "100", "101", "80"}, nil
		case "502":
			return []string{"20", "12"}, nil
		}
		return nil, errors.New("user: unknown userid " + uid)
	}
	cases := []struct {
		name      string
		adminGID  int
		peer      []uint32
		uid       string
		lookup    groupsFunc
		want      bool
		wantErr   bool
		wantAsked bool
	}{
		{"in the peer's groups: no lookup", 105, peer, "501", lookup, true, false, false},
		{"beyond the 16 peer groups: found by lookup", 80, peer, "501", lookup, true, false, true},
		{"in neither", 80, peer, "502", lookup, false, false, true},
		{"lookup fails: not admin, with the reason", 80, peer, "999", lookup, false, true, true},
		{"no lookup (other OSes): peer groups only", 80, peer, "501", nil, false, false, false},
		{"no admin group", -1, peer, "501", lookup, false, false, false},
		{"no peer groups", 80, nil, "501", lookup, true, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			asked = nil
			got, err := inAdminGroup(tc.adminGID, tc.peer, tc.uid, tc.lookup)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Fatalf("got %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
			if (len(asked) > 0) != tc.wantAsked {
				t.Fatalf("lookup asked for %v, want asked: %v", asked, tc.wantAsked)
			}
		})
	}
}

func TestGroupCache(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	calls := map[string]int{}
	fail := false
	c := newGroupCache(30*time.Second, 2, func() time.Time { return now }, func(uid string) ([]string, error) {
		calls[uid]++
		if fail {
			return nil, errors.New("opendirectoryd unavailable")
		}
		return []string{"20", uid}, nil
	})
	get := func(uid string) ([]string, error) {
		t.Helper()
		return c.groups(uid)
	}
	if g, err := get("501"); err != nil || len(g) != 2 || g[1] != "501" {
		t.Fatalf("first lookup: %v %v", g, err)
	}
	now = now.Add(29 * time.Second)
	get("501")
	if calls["501"] != 1 {
		t.Fatalf("lookups within the ttl: %d, want 1", calls["501"])
	}
	// Expired: asked again; a failure is kept for the ttl too, so a
	// failing directory is not asked on every connection.
	now = now.Add(time.Second)
	fail = true
	if _, err := get("501"); err == nil {
		t.Fatal("failed lookup not reported")
	}
	now = now.Add(10 * time.Second)
	if _, err := get("501"); err == nil || calls["501"] != 2 {
		t.Fatalf("cached failure: err %v, %d lookups", err, calls["501"])
	}
	// A clock set back does not keep an entry forever.
	fail = false
	now = now.Add(-time.Hour)
	if _, err := get("501"); err != nil || calls["501"] != 3 {
		t.Fatalf("after the clock went back: err %v, %d lookups", err, calls["501"])
	}
	// Bounded: a third uid with two fresh entries held clears the cache.
	get("502")
	get("503")
	if len(c.entries) > 2 {
		t.Fatalf("%d entries held, max 2", len(c.entries))
	}
	if _, err := (&groupCache{}).groups("501"); !errors.Is(err, errNoLookup) {
		t.Fatalf("no lookup: %v", err)
	}
}
