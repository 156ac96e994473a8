package fingerprint

// Matching strategies, as named by Keygen's machineMatchingStrategy and
// componentMatchingStrategy policy attributes (keygen-api app/models/policy.rb).
const (
	MatchAny  = "MATCH_ANY"
	MatchTwo  = "MATCH_TWO"
	MatchMost = "MATCH_MOST"
	MatchAll  = "MATCH_ALL"
)

// Strategies lists the matching strategies in Comparison.Pass.
var Strategies = []string{MatchAny, MatchTwo, MatchMost, MatchAll}

// Comparison explains how the current components relate to those recorded
// at activation. Components are matched by fingerprint first, so a disk that
// moved from "disk-1" to "disk-0" still matches.
type Comparison struct {
	Matched []string `json:"matched"` // current names whose fingerprint was recorded
	Changed []string `json:"changed"` // names present in both with a different, unmatched fingerprint
	Added   []string `json:"added"`   // current names that are neither matched nor changed
	Missing []string `json:"missing"` // recorded names whose fingerprint is gone and that did not change in place
	// Pass says, per strategy, whether Keygen would accept the current
	// components as the components scope of a validation.
	Pass map[string]bool `json:"pass"`
	// MatchedCount and Supplied are the inputs to Passes: how many of the
	// supplied (current, distinct) fingerprints the machine has on record.
	MatchedCount int `json:"matched_count"`
	Supplied     int `json:"supplied"`
}

// Status returns "match", "changed" or "added" for a current component name,
// "missing" for a recorded one that is gone, and "" for an unknown name.
func (c Comparison) Status(name string) string {
	for _, s := range []struct {
		list []string
		st   string
	}{{c.Matched, "match"}, {c.Changed, "changed"}, {c.Added, "added"}, {c.Missing, "missing"}} {
		for _, n := range s.list {
			if n == name {
				return s.st
			}
		}
	}
	return ""
}

// Compare compares the components recorded at activation with the current
// ones. Order of the inputs does not matter.
func Compare(recorded, current []Component) Comparison {
	recFP := map[string]bool{}
	recByName := map[string]string{}
	for _, r := range recorded {
		recFP[r.Fingerprint] = true
		recByName[r.Name] = r.Fingerprint
	}
	curFP := map[string]bool{}
	for _, c := range current {
		curFP[c.Fingerprint] = true
	}
	cmp := Comparison{Matched: []string{}, Changed: []string{}, Added: []string{}, Missing: []string{}, Pass: map[string]bool{}}
	changed := map[string]bool{}
	counted := map[string]bool{}
	for _, c := range current {
		if !counted[c.Fingerprint] {
			counted[c.Fingerprint] = true
			cmp.Supplied++
			if recFP[c.Fingerprint] {
				cmp.MatchedCount++
			}
		}
		switch old, named := recByName[c.Name]; {
		case recFP[c.Fingerprint]:
			cmp.Matched = append(cmp.Matched, c.Name)
		case named && !curFP[old]:
			cmp.Changed = append(cmp.Changed, c.Name)
			changed[c.Name] = true
		default:
			cmp.Added = append(cmp.Added, c.Name)
		}
	}
	for _, r := range recorded {
		if !curFP[r.Fingerprint] && !changed[r.Name] {
			cmp.Missing = append(cmp.Missing, r.Name)
		}
	}
	for _, s := range Strategies {
		cmp.Pass[s] = Passes(s, cmp.MatchedCount, cmp.Supplied)
	}
	return cmp
}

// Passes reports whether Keygen's matching strategy accepts matched of
// supplied fingerprints: MATCH_ANY ≥ 1, MATCH_TWO ≥ 2, MATCH_MOST ≥
// ceil(supplied/2), MATCH_ALL = supplied. An empty strategy is MATCH_ANY
// (Keygen treats null as MATCH_ANY). Nothing supplied never passes, and an
// unknown strategy never passes: the agent must not promise what the server
// may refuse.
func Passes(strategy string, matched, supplied int) bool {
	if supplied <= 0 || matched < 0 || matched > supplied {
		return false
	}
	switch strategy {
	case MatchAny, "":
		return matched >= 1
	case MatchTwo:
		return matched >= 2
	case MatchMost:
		return matched >= (supplied+1)/2
	case MatchAll:
		return matched == supplied
	}
	return false
}
