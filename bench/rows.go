//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/chaos"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

// --- helpers ---

type durations []time.Duration

func (d durations) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p / 100 * float64(len(s)-1))
	return s[i]
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d.Nanoseconds())/1e6)
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func ratio(a, b time.Duration) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f×", float64(a)/float64(b))
}

func tempDir() (string, error) { return os.MkdirTemp("", "kgab") }

// noBudget lifts the agent's client-side request budget (the loops exceed
// Keygen Cloud's limits on purpose).
var noBudget = agent.Config{RateLimit: agent.RateLimitConfig{PerShort: 1_000_000, PerLong: 10_000_000}}

// activeEnv starts an in-process agent on a real Unix socket with kernel
// peer credentials, against a devserver (loopback TCP when tcp is set).
func activeEnv(tcp bool) (*chaos.Env, string, error) {
	dir, err := tempDir()
	if err != nil {
		return nil, "", err
	}
	sock := filepath.Join(dir, "a.sock")
	e, err := chaos.NewEnv(chaos.Options{Socket: sock, RealPeers: true, ListenTCP: tcp, NoRateLimit: true, Config: noBudget, DiscardLogs: true})
	if err != nil {
		return nil, "", err
	}
	if err := e.Start(); err != nil {
		e.Close()
		return nil, "", err
	}
	if st, err := e.StatusDirect(); err != nil || st.State != "active" {
		e.Close()
		return nil, "", fmt.Errorf("agent not active: %v %+v\n%s", err, st, e.Logs.Tail(20))
	}
	return e, dir, nil
}

// lineClient writes one request line and reads one response line.
type lineClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialLine(path string) (*lineClient, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	return &lineClient{c: c, br: bufio.NewReaderSize(c, 64<<10)}, nil
}

func (l *lineClient) roundTrip(req []byte) ([]byte, error) {
	if _, err := l.c.Write(req); err != nil {
		return nil, err
	}
	return l.br.ReadSlice('\n')
}

// echoServer answers every line with resp (the floor).
func echoServer(path string, resp []byte) (net.Listener, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReaderSize(c, 64<<10)
				for {
					if _, err := br.ReadSlice('\n'); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln, nil
}

func measure(n int, f func() error) (durations, error) {
	out := make(durations, 0, n)
	for range n {
		t := time.Now()
		if err := f(); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}

// --- IPC ---

func benchIPC(r *report, m mode) error {
	e, dir, err := activeEnv(false)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	defer e.Close()
	sock := filepath.Join(dir, "a.sock")
	reqs := []struct{ name, line string }{
		{"`agent.hello` (no-op)", `{"jsonrpc":"2.0","id":1,"method":"agent.hello","params":{"protocol":1}}` + "\n"},
		{"`license.status`", `{"jsonrpc":"2.0","id":1,"method":"license.status"}` + "\n"},
	}
	for i, q := range reqs {
		lc, err := dialLine(sock)
		if err != nil {
			return err
		}
		resp, err := lc.roundTrip([]byte(q.line))
		if err != nil {
			return err
		}
		if bytes.Contains(resp, []byte(`"error"`)) {
			return fmt.Errorf("%s: %s", q.name, resp)
		}
		canned := append(bytes.Repeat([]byte(" "), len(resp)-1), '\n')
		for range m.ipcIters / 10 { // warm up
			if _, err := lc.roundTrip([]byte(q.line)); err != nil {
				return err
			}
		}
		agentD, err := measure(m.ipcIters, func() error { _, err := lc.roundTrip([]byte(q.line)); return err })
		lc.c.Close()
		if err != nil {
			return err
		}
		echoPath := filepath.Join(dir, fmt.Sprintf("echo%d.sock", i))
		ln, err := echoServer(echoPath, canned)
		if err != nil {
			return err
		}
		ec, err := dialLine(echoPath)
		if err != nil {
			return err
		}
		for range m.ipcIters / 10 {
			if _, err := ec.roundTrip([]byte(q.line)); err != nil {
				return err
			}
		}
		floor, err := measure(m.ipcIters, func() error { _, err := ec.roundTrip([]byte(q.line)); return err })
		ec.c.Close()
		ln.Close()
		if err != nil {
			return err
		}
		size := fmt.Sprintf("%d B → %d B", len(q.line), len(resp))
		r.ipc = append(r.ipc,
			fmt.Sprintf("| %s, %s | agent, raw line client | %d | %s | %s | %s |", q.name, size, len(agentD), fmtDur(agentD.pct(50)), fmtDur(agentD.pct(99)), ratio(agentD.pct(50), floor.pct(50))),
			fmt.Sprintf("| %s, %s | raw echo (floor) | %d | %s | %s | 1.0× |", q.name, size, len(floor), fmtDur(floor.pct(50)), fmtDur(floor.pct(99))))
		// The same through the Go client library apps link.
		ctx := context.Background()
		gc, err := ipc.Dial(ctx, sock)
		if err != nil {
			return err
		}
		call := func() error { _, err := gc.Hello(ctx); return err }
		if i == 1 {
			call = func() error { _, err := gc.Status(ctx); return err }
		}
		for range m.ipcIters / 10 {
			if err := call(); err != nil {
				return err
			}
		}
		goD, err := measure(m.ipcIters, call)
		gc.Close()
		if err != nil {
			return err
		}
		r.ipc = append(r.ipc, fmt.Sprintf("| %s | agent, Go `ipc.Client` | %d | %s | %s | %s |", q.name, len(goD), fmtDur(goD.pct(50)), fmtDur(goD.pct(99)), ratio(goD.pct(50), floor.pct(50))))
	}
	return nil
}

// --- leases ---

func benchLease(r *report, m mode) error {
	e, dir, err := activeEnv(true)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	defer e.Close()
	ctx := context.Background()
	c, err := ipc.Dial(ctx, filepath.Join(dir, "a.sock"))
	if err != nil {
		return err
	}
	defer c.Close()
	cycle := func(wantOffline bool) func() error {
		return func() error {
			l, err := c.Acquire(ctx, ipc.AcquireParams{App: "bench"})
			if err != nil {
				return err
			}
			if l.Offline != wantOffline {
				return fmt.Errorf("lease offline=%v, want %v", l.Offline, wantOffline)
			}
			return l.Release(ctx)
		}
	}
	for range 10 {
		if err := cycle(false)(); err != nil {
			return err
		}
	}
	online, err := measure(m.leaseIters, cycle(false))
	if err != nil {
		return err
	}
	if n := len(e.Srv.Processes()); n != 0 {
		return fmt.Errorf("%d processes left on the server after release", n)
	}

	// Without an agent: the app talks to Keygen itself at every start.
	ms := e.Srv.Machines()
	if len(ms) != 1 {
		return fmt.Errorf("%d machines", len(ms))
	}
	mid, fp := ms[0].ID, e.Fingerprint()
	direct := func() error {
		hc := &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
		defer hc.CloseIdleConnections()
		kc, err := keygen.NewClient(keygen.Config{BaseURL: e.Srv.URL(), Account: e.Srv.AccountID(),
			LicenseKey: e.License.Key, PublicKey: e.Srv.PublicKeyHex(), HTTPClient: hc})
		if err != nil {
			return err
		}
		v, err := kc.ValidateKey(ctx, e.License.Key, keygen.ValidateOptions{Fingerprint: fp, Product: e.Product.ID})
		if err != nil {
			return err
		}
		if !v.Valid {
			return fmt.Errorf("validation: %s", v.Code)
		}
		p, err := kc.SpawnProcess(ctx, mid, fmt.Sprintf("%d@%d", os.Getpid(), time.Now().UnixNano()), map[string]any{"app": "bench"})
		if err != nil {
			return err
		}
		if _, err := kc.PingProcess(ctx, p.ID); err != nil {
			return err
		}
		return kc.KillProcess(ctx, p.ID)
	}
	for range 10 {
		if err := direct(); err != nil {
			return err
		}
	}
	base, err := measure(m.leaseIters, direct)
	if err != nil {
		return err
	}

	// The same two paths with an emulated Internet round trip to Keygen.
	const lat = 25 * time.Millisecond
	k := m.leaseIters / 10
	e.Srv.SetFaults(devserver.Faults{Latency: lat})
	onlineL, err := measure(k, cycle(false))
	if err != nil {
		return err
	}
	baseL, err := measure(k, direct)
	if err != nil {
		return err
	}
	e.Srv.SetFaults(devserver.Faults{})

	// Offline: connections to Keygen refused.
	e.Srv.SetFaults(devserver.Faults{Refuse: true})
	defer e.Srv.SetFaults(devserver.Faults{})
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := c.Acquire(ctx, ipc.AcquireParams{App: "bench"})
		if err != nil {
			return err
		}
		_ = l.Release(ctx)
		if l.Offline {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("agent did not go offline")
		}
	}
	off, err := measure(m.leaseIters, cycle(true))
	if err != nil {
		return err
	}
	row := func(name string, d durations, ref durations) string {
		return fmt.Sprintf("| %s | %d | %s | %s | %s |", name, len(d), fmtDur(d.pct(50)), fmtDur(d.pct(99)), ratio(d.pct(50), ref.pct(50)))
	}
	r.lease = append(r.lease,
		row("agent, online: `lease.acquire` → `lease.release` (spawn + kill on Keygen)", online, online),
		row("no agent: validate-key + spawn + first ping + kill, from the app over HTTP", base, online),
		row("agent, online, Keygen 25 ms away (dev server Latency fault)", onlineL, onlineL),
		row("no agent, Keygen 25 ms away", baseL, onlineL),
		row("agent, offline (Keygen refused): granted from the cached machine file, spawn queued", off, online))
	return nil
}

// --- cold start ---

func benchColdStart(r *report, m mode) error {
	dir, err := tempDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "keygen-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/keygen-agent/keygen-agent/cmd/keygen-agent").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	srv, err := devserver.New(devserver.Options{DisableRateLimit: true})
	if err != nil {
		return err
	}
	defer srv.Close()
	// Seeded with LICENSE auth and every permission: this code speaks with the license key and reads the policy.
	demo, err := srv.Demo(devserver.DemoOptions{AuthenticationStrategy: "LICENSE", Permissions: devserver.LicensePermissions})
	if err != nil {
		return err
	}
	sock := filepath.Join(dir, "a.sock")
	if err := os.WriteFile(filepath.Join(dir, "agent.toml"), []byte("# defaults\n"), 0o600); err != nil {
		return err
	}
	env := append(os.Environ(),
		"KEYGEN_ACCOUNT="+srv.AccountID(), "KEYGEN_PRODUCT="+demo.Product.ID,
		"KEYGEN_LICENSE_KEY="+demo.License.Key, "KEYGEN_PUBLIC_KEY="+srv.PublicKeyHex(),
		"KEYGEN_API_URL="+srv.URL())
	args := []string{"run", "--config", filepath.Join(dir, "agent.toml"), "--data-dir", filepath.Join(dir, "data"), "--socket", sock, "--log-level", "warn"}
	run := func(state string) (accept, ready time.Duration, err error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var logs bytes.Buffer
		cmd.Stderr = &logs
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return 0, 0, err
		}
		defer func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}()
		deadline := t0.Add(30 * time.Second)
		for {
			c, err := net.Dial("unix", sock)
			if err == nil {
				c.Close()
				accept = time.Since(t0)
				break
			}
			if time.Now().After(deadline) {
				return 0, 0, fmt.Errorf("socket never accepted: %v\n%s", err, logs.String())
			}
			time.Sleep(200 * time.Microsecond)
		}
		ctx := context.Background()
		for {
			c, err := ipc.Dial(ctx, sock)
			if err == nil {
				st, err := c.Status(ctx)
				c.Close()
				if err == nil && st.State == state {
					return accept, time.Since(t0), nil
				}
			}
			if time.Now().After(deadline) {
				return 0, 0, fmt.Errorf("never %s\n%s", state, logs.String())
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	// Warm the cache: activation and machine file.
	if _, _, err := run("active"); err != nil {
		return err
	}
	for _, c := range []struct {
		name, state string
		faults      devserver.Faults
	}{
		{"online (validated at start)", "active", devserver.Faults{}},
		{"offline (connection refused)", "offline", devserver.Faults{Refuse: true}},
	} {
		srv.SetFaults(c.faults)
		var acc, rdy durations
		for range m.coldRuns {
			a, b, err := run(c.state)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			acc, rdy = append(acc, a), append(rdy, b)
		}
		r.cold = append(r.cold, fmt.Sprintf("| %s | %d | %s | %s | %s | %s |", c.name, len(acc),
			fmtDur(acc.pct(50)), fmtDur(acc.pct(99)), fmtDur(rdy.pct(50)), fmtDur(rdy.pct(99))))
	}
	srv.SetFaults(devserver.Faults{})
	return nil
}

// --- certificates ---

func benchCert(r *report, m mode) error {
	e, dir, err := activeEnv(false)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	defer e.Close()
	kc, err := keygen.NewClient(keygen.Config{BaseURL: e.Srv.URL(), Account: e.Srv.AccountID(),
		LicenseKey: e.License.Key, PublicKey: e.Srv.PublicKeyHex(), HTTPClient: &http.Client{Transport: e.Srv.Transport()}})
	if err != nil {
		return err
	}
	co, err := kc.CheckoutMachine(context.Background(), e.Fingerprint(), keygen.CheckoutOptions{
		Algorithm: "aes-256-gcm+ed25519", Include: []string{"license", "license.entitlements", "license.policy"}})
	if err != nil {
		return err
	}
	keys, err := keygen.ParsePublicKeys(e.Srv.PublicKeyHex(), "", "")
	if err != nil {
		return err
	}
	o := keygen.OpenOptions{Keys: keys, LicenseKey: e.License.Key, Fingerprint: e.Fingerprint()}
	if _, err := keygen.OpenCertificate(co.Certificate, o); err != nil {
		return err
	}
	n := 0
	t0 := time.Now()
	for time.Since(t0) < m.certDur {
		for range 50 {
			if _, err := keygen.OpenCertificate(co.Certificate, o); err != nil {
				return err
			}
		}
		n += 50
	}
	el := time.Since(t0)
	per := el / time.Duration(n)
	r.cert = append(r.cert, fmt.Sprintf("| verify + decrypt + decode a %d-byte machine file (one core) | %d | %s | %.0f |",
		len(co.Certificate), n, fmtDur(per), float64(n)/el.Seconds()))
	return nil
}

// --- scale ---

// benchScale runs the synctest scenario in scale_test.go and collects the
// rows it prints.
func benchScale(r *report, m mode) error {
	cmd := exec.Command("go", "test", "-count=1", "-run", "^TestScaleReport$", "-v", "-timeout", "10m", "./bench/")
	cmd.Env = append(os.Environ(), "BENCH_SCALE=1")
	if m.full {
		cmd.Env = append(cmd.Env, "BENCH_SCALE_FULL=1")
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	for _, l := range strings.Split(out.String(), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "SCALEROW "):
			r.scale = append(r.scale, strings.TrimPrefix(l, "SCALEROW "))
		case strings.HasPrefix(l, "SCALENOTE "):
			r.scaleNotes = append(r.scaleNotes, strings.TrimPrefix(l, "SCALENOTE "))
		}
	}
	if err != nil {
		return fmt.Errorf("%v\n%s", err, out.String())
	}
	if len(r.scale) == 0 {
		return fmt.Errorf("no rows from the scale test:\n%s", out.String())
	}
	return nil
}
