package devserver

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ParseFault applies one fault spec to f. Specs (as the devserver and dev
// verbs' repeatable --fault flag and the admin route take them):
//
//	refuse | hang | 429 | bad-signature | no-signature | truncate
//	latency=25ms | 5xx=0.3 (share of 500/503 answers, 0..1)
//	date-skew=-10m (shift the signed Date header)
//	route=POST /processes (limit the faults to that route key; repeatable)
func ParseFault(spec string, f *Faults) error {
	name, val, hasVal := strings.Cut(strings.TrimSpace(spec), "=")
	name = strings.ToLower(strings.TrimSpace(name))
	val = strings.TrimSpace(val)
	flag := func(dst *bool) error {
		if hasVal {
			b, err := strconv.ParseBool(val)
			if err != nil {
				return fmt.Errorf("fault %q: %q is not a boolean", name, val)
			}
			*dst = b
			return nil
		}
		*dst = true
		return nil
	}
	dur := func(dst *time.Duration, signed bool) error {
		d, err := time.ParseDuration(val)
		if err != nil || (!signed && d < 0) {
			return fmt.Errorf("fault %q: %q is not a duration like 25ms", name, val)
		}
		*dst = d
		return nil
	}
	switch name {
	case "refuse":
		return flag(&f.Refuse)
	case "hang":
		return flag(&f.Hang)
	case "429", "rate-limit", "rate-limit-storm":
		return flag(&f.RateLimitStorm)
	case "bad-signature":
		return flag(&f.BadSignature)
	case "no-signature":
		return flag(&f.NoSignature)
	case "truncate", "truncate-body":
		return flag(&f.TruncateBody)
	case "latency":
		return dur(&f.Latency, false)
	case "date-skew":
		return dur(&f.DateSkew, true)
	case "5xx", "server-error-rate":
		r, err := strconv.ParseFloat(val, 64)
		if err != nil || r < 0 || r > 1 {
			return fmt.Errorf("fault %q: %q is not a rate between 0 and 1", name, val)
		}
		f.ServerErrorRate = r
		return nil
	case "route":
		method, path, ok := strings.Cut(val, " ")
		if !ok || method == "" || !strings.HasPrefix(path, "/") {
			return fmt.Errorf("fault route: %q is not a route key like \"POST /processes\"", val)
		}
		f.Routes = append(f.Routes, strings.ToUpper(method)+" "+path)
		return nil
	}
	return fmt.Errorf("unknown fault %q (refuse, hang, latency=, 5xx=, 429, bad-signature, no-signature, truncate, date-skew=, route=)", name)
}

// ParseFaults parses several specs into one [Faults].
func ParseFaults(specs []string) (Faults, error) {
	var f Faults
	for _, s := range specs {
		if err := ParseFault(s, &f); err != nil {
			return Faults{}, err
		}
	}
	return f, nil
}

// ParsePermissions parses a --permissions value: "default" (nil: Keygen's
// defaults), "all" (every license permission) or a comma-separated list.
func ParsePermissions(v string) ([]string, error) {
	switch strings.TrimSpace(v) {
	case "", "default":
		return nil, nil
	case "all", "*":
		return slices.Clone(LicensePermissions), nil
	}
	var out []string
	for _, p := range strings.Split(v, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(LicensePermissions, p) {
			return nil, fmt.Errorf("unknown license permission %q", p)
		}
		out = append(out, p)
	}
	return out, nil
}

// FaultsPath is the admin route (admin token) that shows (GET), replaces
// (PUT, body {"faults": ["latency=25ms", ...]}) and clears (DELETE) the
// active faults, under /v1/accounts/{account}. It is served before any
// fault applies, so a hung or refusing server can still be healed.
const FaultsPath = "/devserver/faults"

// serveFaults handles the admin fault route; false if r is not for it.
func (s *Server) serveFaults(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path != "/v1/accounts/"+s.account+FaultsPath && r.URL.Path != "/v1"+FaultsPath {
		return false
	}
	reply := func(status int, v any) {
		b, _ := json.Marshal(v)
		writeRaw(w, status, "application/json", b, nil)
	}
	fail := func(status int, detail string) {
		writeRaw(w, status, jsonAPIType, errorBody(newError(status, detail, ""), ""), nil)
	}
	scheme, secret := credential(r)
	s.mu.Lock()
	t := s.tokens[secret]
	s.mu.Unlock()
	if scheme != "token" || t == nil || t.Kind != "admin" {
		fail(401, "an admin token is required")
		return true
	}
	switch r.Method {
	case http.MethodGet:
	case http.MethodDelete:
		s.setFaults(Faults{}, true)
	case http.MethodPut, http.MethodPost:
		var body struct {
			Faults []string `json:"faults"`
		}
		raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil || json.Unmarshal(raw, &body) != nil {
			fail(400, `body must be {"faults": ["latency=25ms", ...]}`)
			return true
		}
		f, err := ParseFaults(body.Faults)
		if err != nil {
			fail(400, err.Error())
			return true
		}
		s.setFaults(f, true)
	default:
		fail(405, "use GET, PUT or DELETE")
		return true
	}
	reply(200, faultsDoc(s.currentFaults()))
	return true
}

// faultsDoc renders faults as specs.
func faultsDoc(f Faults) map[string]any {
	var specs []string
	add := func(on bool, s string) {
		if on {
			specs = append(specs, s)
		}
	}
	add(f.Refuse, "refuse")
	add(f.Hang, "hang")
	add(f.Latency > 0, "latency="+f.Latency.String())
	add(f.ServerErrorRate > 0, "5xx="+strconv.FormatFloat(f.ServerErrorRate, 'g', -1, 64))
	add(f.RateLimitStorm, "429")
	add(f.BadSignature, "bad-signature")
	add(f.NoSignature, "no-signature")
	add(f.TruncateBody, "truncate")
	add(f.DateSkew != 0, "date-skew="+f.DateSkew.String())
	for _, r := range f.Routes {
		specs = append(specs, "route="+r)
	}
	if specs == nil {
		specs = []string{}
	}
	return map[string]any{"faults": specs}
}

// drawServerError draws, from the seeded fault randomness
// (Options.Seed), whether a request on route gets an injected 5xx at
// rate, and which: 500 or 503. Each route has its own stream, so the
// draws of one route do not shift with how requests on others
// interleave (the model test replays a seed; an admin call and the
// agent's background requests at one instant were drawn in either order).
func (s *Server) drawServerError(route string, rate float64) (status int, hit bool) {
	if rate <= 0 {
		return 0, false
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	r := s.faultRnd[route]
	if r == nil {
		h := fnv.New64a()
		_, _ = h.Write([]byte(route))
		r = rand.New(rand.NewPCG(s.faultSeed, h.Sum64()))
		if s.faultRnd == nil {
			s.faultRnd = map[string]*rand.Rand{}
		}
		s.faultRnd[route] = r
	}
	if r.Float64() >= rate {
		return 0, false
	}
	if r.IntN(2) == 0 {
		return 500, true
	}
	return 503, true
}
