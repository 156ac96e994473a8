package ipc

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// groupsFunc lists a user's group ids (as os/user's GroupIds does) by uid.
type groupsFunc func(uid string) ([]string, error)

// inAdminGroup decides admin_group membership: first from the groups the
// kernel handed over with the connection (peerGroups), then, when they do
// not hold the group and lookup is not nil, from the user's full group
// list. macOS's LOCAL_PEERCRED carries at most 16 groups, so a member of
// more groups (or of a directory group) may be missing from peerGroups.
// A failed lookup means "not admin" (fail closed); the error says why.
func inAdminGroup(adminGID int, peerGroups []uint32, uid string, lookup groupsFunc) (bool, error) {
	if adminGID < 0 {
		return false, nil
	}
	for _, g := range peerGroups {
		if int64(g) == int64(adminGID) {
			return true, nil
		}
	}
	if lookup == nil {
		return false, nil
	}
	gids, err := lookup(uid)
	if err != nil {
		return false, fmt.Errorf("groups of uid %s: %w", uid, err)
	}
	want := strconv.Itoa(adminGID)
	for _, g := range gids {
		if g == want {
			return true, nil
		}
	}
	return false, nil
}

// groupCache remembers each uid's group list (or the lookup's error) for
// ttl, so a client opening connections in a loop does not ask the
// directory service each time. At most maxEntries uids are held; when
// full, expired entries are dropped, and if none expired, all of them.
type groupCache struct {
	ttl        time.Duration
	maxEntries int
	now        func() time.Time
	lookup     groupsFunc

	mu      sync.Mutex
	entries map[string]groupEntry
}

type groupEntry struct {
	gids []string
	err  error
	at   time.Time
}

// errNoLookup is returned by a groupCache without a lookup function.
var errNoLookup = errors.New("no group lookup")

func newGroupCache(ttl time.Duration, maxEntries int, now func() time.Time, lookup groupsFunc) *groupCache {
	return &groupCache{ttl: ttl, maxEntries: maxEntries, now: now, lookup: lookup, entries: map[string]groupEntry{}}
}

// groups returns uid's groups, from the cache while fresh. The lookup runs
// outside the lock; concurrent misses for one uid may each look it up.
func (c *groupCache) groups(uid string) ([]string, error) {
	if c.lookup == nil {
		return nil, errNoLookup
	}
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[uid]
	c.mu.Unlock()
	if ok && now.Sub(e.at) < c.ttl && !now.Before(e.at) {
		return e.gids, e.err
	}
	gids, err := c.lookup(uid)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[uid]; !ok && len(c.entries) >= c.maxEntries {
		for k, old := range c.entries {
			if now.Sub(old.at) >= c.ttl || now.Before(old.at) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= c.maxEntries {
			clear(c.entries)
		}
	}
	c.entries[uid] = groupEntry{gids: gids, err: err, at: now}
	return gids, err
}
