package agent

import (
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/keygen-agent/keygen-agent/internal/version"
)

// uaRecorder passes requests to next and records their User-Agent.
type uaRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	uas  []string
}

func (r *uaRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.uas = append(r.uas, req.Header.Get("User-Agent"))
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

// TestUserAgent pins the header Keygen sees from the agent: one product
// token, keygen-agent/<version.Get()>, then Go and the platform; never the
// agent's name in the vendor-prefix place followed by a "dev" version.
func TestUserAgent(t *testing.T) {
	e := newEnv(t, envOptions{})
	rec := &uaRecorder{next: e.srv.Transport()}
	deps := e.deps
	deps.HTTPClient = &http.Client{Transport: rec}
	deps.Fingerprinter, deps.Processes, deps.NoWatch = e.fp, e.procs, true
	a, err := New(e.cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := a.newClient(e.cfg.LicenseKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.Me(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := "keygen-agent/" + version.Get() + " go/" + strings.TrimPrefix(runtime.Version(), "go") + " " + runtime.GOOS + "/" + runtime.GOARCH
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.uas) == 0 {
		t.Fatal("no request recorded")
	}
	for _, ua := range rec.uas {
		if ua != want {
			t.Errorf("User-Agent %q, want %q", ua, want)
		}
	}
}
