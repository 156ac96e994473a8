package devserver

import (
	"testing"
	"testing/synctest"
	"time"
)

func processStatusOf(s *Server, id string) string {
	for _, p := range s.Processes() {
		if p.ID == id {
			return p.Status
		}
	}
	return "GONE"
}

func machineStatusOf(s *Server, id string) string {
	for _, m := range s.Machines() {
		if m.ID == id {
			return m.HeartbeatStatus
		}
	}
	return "GONE"
}

// TestProcessHeartbeatCulled: a process that stops pinging goes DEAD after
// its interval, pings get 422 PROCESS_HEARTBEAT_DEAD until the 2-minute
// cull removes it, then 404.
func TestProcessHeartbeatCulled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, Options{})
		d := demo(t, s, DemoOptions{HeartbeatDuration: 300, MaxProcesses: intp(1)})
		c := newClient(t, s, licenseAuth(d.License.Key))
		mid := c.activate(d.License.ID, "fp")
		r := c.spawn(mid, "1")
		pid := r.str("data", "id")
		if r.get("data", "attributes", "interval") != float64(300) {
			t.Fatalf("interval %v", r.get("data", "attributes", "interval"))
		}
		// Several windows kept alive by pings.
		for i := range 5 {
			time.Sleep(290 * time.Second)
			r := c.do("POST", "/processes/"+pid+"/actions/ping", nil)
			if r.Status != 200 || r.str("data", "attributes", "status") != "ALIVE" {
				t.Fatalf("ping %d: %d %s", i, r.Status, r.Raw)
			}
		}
		time.Sleep(301 * time.Second)
		if st := processStatusOf(s, pid); st != "DEAD" {
			t.Fatalf("status %s, want DEAD (maybe culled early)", st)
		}
		r = c.do("POST", "/processes/"+pid+"/actions/ping", nil)
		if r.Status != 422 || r.code() != "PROCESS_HEARTBEAT_DEAD" || r.detail() != "is dead" || r.str("errors", 0, "title") != "Unprocessable entity" {
			t.Fatalf("dead ping: %d %s", r.Status, r.Raw)
		}
		// Dead-but-unculled rows still count against the limit.
		if r := c.spawn(mid, "2"); r.code() != "MACHINE_PROCESS_LIMIT_EXCEEDED" {
			t.Fatalf("spawn over dead row: %s", r.Raw)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if st := processStatusOf(s, pid); st != "GONE" {
			t.Fatalf("status %s after cull", st)
		}
		if r := c.do("POST", "/processes/"+pid+"/actions/ping", nil); r.Status != 404 || r.code() != "NOT_FOUND" {
			t.Fatalf("culled ping: %d %s", r.Status, r.Raw)
		}
		if r := c.spawn(mid, "2"); r.Status != 201 {
			t.Fatalf("spawn after cull: %s", r.Raw)
		}
	})
}

func TestProcessResurrectionWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, Options{CullInterval: time.Minute})
		d := demo(t, s, DemoOptions{HeartbeatDuration: 60, ResurrectionStrategy: "5_MINUTE_REVIVE"})
		c := newClient(t, s, licenseAuth(d.License.Key))
		mid := c.activate(d.License.ID, "fp")
		pid := c.spawn(mid, "1").str("data", "id")
		time.Sleep(4 * time.Minute)
		synctest.Wait()
		if st := processStatusOf(s, pid); st != "DEAD" {
			t.Fatalf("inside window: %s", st)
		}
		r := c.do("POST", "/processes/"+pid+"/actions/ping", nil)
		if r.Status != 200 || r.str("data", "attributes", "status") != "RESURRECTED" {
			t.Fatalf("revive: %d %s", r.Status, r.Raw)
		}
		if r := c.do("GET", "/processes/"+pid, nil); r.str("data", "attributes", "status") != "ALIVE" {
			t.Fatalf("after revive: %s", r.Raw)
		}
		// Past the window (1 min interval + 5 min revive) it is culled.
		time.Sleep(7 * time.Minute) // window ends at 10m; next cull tick at 11m
		synctest.Wait()
		if st := processStatusOf(s, pid); st != "GONE" {
			t.Fatalf("after window: %s", st)
		}
	})
}

func TestKeepDeadAlwaysRevive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, Options{})
		d := demo(t, s, DemoOptions{HeartbeatDuration: 60, MaxProcesses: intp(1), CullStrategy: "KEEP_DEAD", ResurrectionStrategy: "ALWAYS_REVIVE"})
		c := newClient(t, s, licenseAuth(d.License.Key))
		mid := c.activate(d.License.ID, "fp")
		pid := c.spawn(mid, "1").str("data", "id")
		time.Sleep(time.Hour)
		synctest.Wait()
		if st := processStatusOf(s, pid); st != "DEAD" {
			t.Fatalf("KEEP_DEAD: %s", st)
		}
		if r := c.spawn(mid, "2"); r.code() != "MACHINE_PROCESS_LIMIT_EXCEEDED" {
			t.Fatalf("dead row must count: %s", r.Raw)
		}
		if r := c.do("POST", "/processes/"+pid+"/actions/ping", nil); r.str("data", "attributes", "status") != "RESURRECTED" {
			t.Fatalf("always revive: %s", r.Raw)
		}
	})
}

// TestMachineHeartbeat covers basis FROM_FIRST_PING with a required
// heartbeat: NOT_STARTED, ALIVE, DEAD, validation codes, culling and 404.
func TestMachineHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, Options{})
		prod := s.CreateProduct("p")
		pol := s.CreatePolicy(PolicySpec{ProductID: prod.ID, Floating: true, RequireHeartbeat: true, HeartbeatBasis: "FROM_FIRST_PING",
			HeartbeatDuration: intp(120), AuthenticationStrategy: "LICENSE"})
		l := s.CreateLicense(LicenseSpec{PolicyID: pol.ID})
		c := newClient(t, s, licenseAuth(l.Key))
		mid := c.activate(l.ID, "fp")
		validate := func() string {
			r := c.do("POST", "/licenses/"+l.ID+"/actions/validate", map[string]any{"meta": map[string]any{"scope": map[string]any{"fingerprint": "fp"}}})
			return r.str("meta", "code")
		}
		if st := machineStatusOf(s, mid); st != "NOT_STARTED" {
			t.Fatalf("new: %s", st)
		}
		if code := validate(); code != "HEARTBEAT_NOT_STARTED" {
			t.Fatalf("validate new: %s", code)
		}
		r := c.do("POST", "/machines/fp/actions/ping", nil)
		if r.Status != 200 || r.str("data", "attributes", "heartbeatStatus") != "ALIVE" || r.str("data", "attributes", "nextHeartbeat") == "" {
			t.Fatalf("ping by fingerprint: %d %s", r.Status, r.Raw)
		}
		if code := validate(); code != "VALID" {
			t.Fatalf("validate alive: %s", code)
		}
		for range 3 {
			time.Sleep(100 * time.Second)
			if r := c.do("POST", "/machines/"+mid+"/actions/ping-heartbeat", nil); r.Status != 200 {
				t.Fatalf("ping: %s", r.Raw)
			}
		}
		time.Sleep(121 * time.Second)
		if code := validate(); code != "HEARTBEAT_DEAD" {
			t.Fatalf("validate dead: %s", code)
		}
		if r := c.do("POST", "/machines/"+mid+"/actions/ping", nil); r.Status != 422 || r.code() != "MACHINE_HEARTBEAT_DEAD" {
			t.Fatalf("dead ping: %s", r.Raw)
		}
		if r := c.do("POST", "/machines/"+mid+"/actions/reset", nil); r.Status != 403 {
			t.Fatalf("license reset: %d", r.Status)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if r := c.do("POST", "/machines/"+mid+"/actions/ping", nil); r.Status != 404 {
			t.Fatalf("culled ping: %d %s", r.Status, r.Raw)
		}
		if code := validate(); code != "NO_MACHINES" {
			t.Fatalf("validate culled: %s", code)
		}
	})
}

// TestMachineNeverPingedDies: a required-heartbeat machine that never pings
// is DEAD after heartbeatDuration and then culled (keygen-api app/workers/machine_heartbeat_worker.rb).
func TestMachineNeverPingedDies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newTestServer(t, Options{})
		prod := s.CreateProduct("p")
		pol := s.CreatePolicy(PolicySpec{ProductID: prod.ID, Floating: true, RequireHeartbeat: true, HeartbeatBasis: "FROM_FIRST_PING",
			HeartbeatDuration: intp(60), AuthenticationStrategy: "LICENSE"})
		l := s.CreateLicense(LicenseSpec{PolicyID: pol.ID})
		c := newClient(t, s, licenseAuth(l.Key))
		mid := c.activate(l.ID, "fp")
		c.spawn(mid, "1")
		time.Sleep(61 * time.Second)
		if st := machineStatusOf(s, mid); st != "DEAD" {
			t.Fatalf("never pinged: %s", st)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if st := machineStatusOf(s, mid); st != "GONE" || len(s.Processes()) != 0 {
			t.Fatalf("after cull: %s, %d processes", st, len(s.Processes()))
		}
	})
}

func TestFromCreationBasis(t *testing.T) {
	s := newTestServer(t, Options{CullInterval: -1})
	d := demo(t, s, DemoOptions{RequireHeartbeat: true})
	if d.Policy.HeartbeatBasis != "FROM_CREATION" {
		t.Fatalf("basis %s", d.Policy.HeartbeatBasis)
	}
	c := newClient(t, s, licenseAuth(d.License.Key))
	mid := c.activate(d.License.ID, "fp")
	if st := machineStatusOf(s, mid); st != "ALIVE" {
		t.Fatalf("status %s", st)
	}
}
