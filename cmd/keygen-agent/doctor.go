package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keygen-agent/keygen-agent/agent"
	"github.com/keygen-agent/keygen-agent/fingerprint"
	"github.com/keygen-agent/keygen-agent/installer"
	"github.com/keygen-agent/keygen-agent/internal/paths"
	"github.com/keygen-agent/keygen-agent/internal/version"
	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen"
)

func init() {
	register(verb{name: "doctor", summary: "check the configuration, permissions, agent, service, clock and Keygen", run: runDoctor})
}

const doctorHelp = `Each check prints one line: "ok|warn|fail  CHECK: WHAT", followed by the fix when it is not ok.
The configuration is read like "run" reads it: flags > KEYGEN_* environment variables > config file.
Checks: config, config-perms, data-dir-perms, cache-perms (unix), socket, service, clock, keygen
(GET /v1/ping), signature (a signed validate-key with the configured license key and public key),
auth (GET /me with the license token, else the key: explains LICENSE_NOT_ALLOWED, TOKEN_NOT_ALLOWED,
suspended/banned/expired licenses and required scopes), settings (which policy settings were read and
which are assumed from the config), fingerprint (two reads agree), certificate (license state, last sync, offline window).
Every network check is bounded by --timeout.

exit codes:
  0  no check failed (warnings allowed)
  1  at least one check failed
  2  bad flags`

// Check statuses.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "fail"
)

// doctorCheck is one line of the report (and one element of --json).
type doctorCheck struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

// doctor holds what the checks share.
type doctor struct {
	e          *env
	timeout    time.Duration
	configFile string
	explicit   bool
	cfg        *agent.Config // nil when the configuration does not load
	socket     string
	dataDir    string // the configured one, else --data-dir, KEYGEN_AGENT_DATA_DIR or the default

	hello     *ipc.HelloResult
	status    *ipc.Status
	statusErr error
	pingDate  time.Time // the Date header of Keygen's /v1/ping response
}

func runDoctor(e *env) int {
	fs := newFlagSet(e, "doctor", "", "Diagnose this machine's agent: one line per check, with the fix for each problem.", doctorHelp)
	defaults := paths.System()
	defConfig, defData := defaults.ConfigFile, defaults.DataDir
	configFile := fs.String("config", defConfig, "config file (TOML), as given to run")
	socket := fs.String("socket", "", "the agent's socket or named pipe (default: "+ipc.EnvSocket+", else the config's socket, else the OS default)")
	dataDir := fs.String("data-dir", "", "data directory (default: from the config, else "+defData+")")
	asJSON := fs.Bool("json", false, "print a JSON array of {check, status, detail, fix}")
	timeout := fs.Duration("timeout", 5*time.Second, "bound on each network check")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() != 0 || *timeout <= 0 {
		fmt.Fprintln(e.stderr, "keygen-agent: doctor takes no arguments, and --timeout must be positive")
		return exitUsage
	}
	d := &doctor{e: e, timeout: *timeout, configFile: *configFile}
	fs.Visit(func(f *flag.Flag) { d.explicit = d.explicit || f.Name == "config" })

	var checks []doctorCheck
	add := func(c ...doctorCheck) { checks = append(checks, c...) }
	add(d.checkConfig(defData, *dataDir, *socket))
	add(d.checkPermissions()...)
	add(d.checkSocket())
	add(d.checkService())
	// Keygen first: the clock check uses the ping's Date header.
	kg := d.checkKeygen()
	auth, settings := d.checkAuth()
	add(d.checkClock(), kg, d.checkSignature(), auth, settings, d.checkFingerprint(), d.checkCertificate())

	failed := false
	for _, c := range checks {
		failed = failed || c.Status == checkFail
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(checks)
	} else {
		printChecks(e.stdout, checks)
	}
	if failed {
		return exitFailure
	}
	return exitOK
}

func printChecks(w io.Writer, checks []doctorCheck) {
	for _, c := range checks {
		line := fmt.Sprintf("%-4s  %s: %s", c.Status, c.Check, c.Detail)
		if c.Status != checkOK && c.Fix != "" {
			line += " — fix: " + c.Fix
		}
		fmt.Fprintln(w, line)
	}
}

func (d *doctor) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(d.e.ctx, d.timeout)
}

// checkConfig loads the configuration the way run does.
func (d *doctor) checkConfig(defData, dataDir, socket string) doctorCheck {
	c := doctorCheck{Check: "config"}
	override := agent.Config{DataDir: dataDir, Socket: socket}
	cfg, warnings, err := agent.Load(agent.LoadOptions{File: d.configFile, FileRequired: d.explicit, Getenv: d.e.getenv,
		Override: override, DefaultDataDir: defData})
	d.socket = firstNonEmpty(socket, d.e.getenv(ipc.EnvSocket), ipc.DefaultSocketPath())
	d.dataDir = firstNonEmpty(dataDir, d.e.getenv("KEYGEN_AGENT_DATA_DIR"), defData)
	source := "environment only (no config file)"
	if d.configFile != "" {
		if _, serr := os.Stat(d.configFile); serr == nil {
			source = d.configFile
		} else {
			source = d.configFile + " not found; environment only"
		}
	}
	if err != nil {
		c.Status, c.Detail = checkFail, fmt.Sprintf("%s: %v", source, err)
		c.Fix = "edit the config file (see keygen-agent run --help) or set the KEYGEN_* variables; pass --config FILE if it is elsewhere"
		return c
	}
	d.cfg = &cfg
	// cfg has --socket > KEYGEN_AGENT_SOCKET > config file already.
	d.socket = firstNonEmpty(cfg.Socket, ipc.DefaultSocketPath())
	d.dataDir = cfg.DataDir
	c.Status = checkOK
	c.Detail = fmt.Sprintf("%s: account %s, api_url %s, data_dir %s, activation %s", source, cfg.Account, cfg.APIURL, cfg.DataDir, cfg.Activation)
	var problems []string
	if cfg.Insecure {
		problems = append(problems, "insecure_skip_verify is set: Keygen's signatures are not checked")
		c.Fix = "remove insecure_skip_verify and set public_key"
	}
	if cfg.LicenseKey == "" {
		problems = append(problems, "no license_key (fine if activated with keygen-agent activate)")
		if c.Fix == "" {
			c.Fix = "set license_key (or KEYGEN_LICENSE_KEY), or run keygen-agent activate KEY"
		}
	}
	problems = append(problems, warnings...)
	if len(warnings) > 0 && c.Fix == "" {
		c.Fix = "remove or correct the unknown keys"
	}
	if len(problems) > 0 {
		c.Status = checkWarn
		c.Detail += "; " + strings.Join(problems, "; ")
	}
	return c
}

// checkSocket dials the agent and asks agent.hello and license.status.
func (d *doctor) checkSocket() doctorCheck {
	c := doctorCheck{Check: "socket"}
	ctx, cancel := d.ctx()
	defer cancel()
	cl, err := ipc.DialOptions(ctx, ipc.ClientOptions{Path: d.socket, App: "keygen-agent-doctor", AppVersion: version.Get()})
	if err != nil {
		c.Status, c.Detail = checkFail, errMessage(err)
		c.Fix = "start the agent (keygen-agent start, or keygen-agent run in a terminal), or pass --socket PATH / set " + ipc.EnvSocket
		return c
	}
	defer cl.Close()
	h, err := cl.Hello(ctx)
	if err != nil {
		c.Status, c.Detail = checkFail, fmt.Sprintf("%s: agent.hello failed: %s", d.socket, errMessage(err))
		c.Fix = "is something else listening on this socket? restart the agent (keygen-agent restart)"
		return c
	}
	// A starting agent has no license state yet: give it the rest of the
	// timeout to finish (license.status is only asked once it has).
	for h.State == string(agent.StateStarting) {
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
			if h2, err := cl.Hello(ctx); err == nil {
				h = h2
				continue
			}
		}
		break
	}
	d.hello = h
	if h.State == string(agent.StateStarting) {
		c.Status, c.Detail = checkWarn, fmt.Sprintf("%s: agent %s, still starting after %s", d.socket, h.AgentVersion, d.timeout)
		c.Fix = "run doctor again in a moment; if it stays starting, see the agent's log"
		return c
	}
	d.status, d.statusErr = cl.Status(ctx)
	c.Status = checkOK
	c.Detail = fmt.Sprintf("%s: agent %s, protocol %d, state %s", d.socket, h.AgentVersion, h.Protocol, h.State)
	if h.Protocol != ipc.ProtocolVersion {
		c.Status = checkWarn
		c.Detail += fmt.Sprintf(" (this CLI speaks protocol %d)", ipc.ProtocolVersion)
		c.Fix = "use the keygen-agent binary of the same version as the running agent"
	}
	if d.status != nil {
		c.Detail += fmt.Sprintf(", license %s", d.status.State)
		if n := len(d.status.OtherAgents); n > 0 {
			c.Status = checkWarn
			c.Detail += fmt.Sprintf("; %d other keygen-agent(s) serve this license on this machine (%s holds %d processes)",
				n, d.status.OtherAgents[0].AgentID, d.status.OtherAgents[0].Processes)
			c.Fix = "run one agent per machine: stop and uninstall the other one (a system and a --user agent, or a second install); they share this machine's process limit"
		}
	}
	return c
}

// checkService asks the OS service manager about the system service, and
// about the per-user one when the system one is not installed.
func (d *doctor) checkService() doctorCheck {
	c := doctorCheck{Check: "service"}
	type answer struct {
		st   installer.State
		user bool
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		var a answer
		for _, user := range []bool{false, true} {
			a = answer{user: user}
			p, err := installer.NewPlan(installer.Options{User: user, Getenv: d.e.getenv})
			if err != nil {
				a.err = err
				break
			}
			b, err := serviceBackend(p)
			if err != nil {
				a.err = err
				break
			}
			a.st, a.err = installer.ServiceStatus(p, b)
			if a.err != nil || a.st != installer.StateNotInstalled {
				break
			}
		}
		ch <- a
	}()
	var a answer
	select {
	case a = <-ch:
	case <-time.After(d.timeout):
		c.Status, c.Detail = checkWarn, "the service manager did not answer within "+d.timeout.String()
		c.Fix = "check the service manager (systemctl, launchctl, sc query keygen-agent)"
		return c
	}
	kind, userFlag := "system service", ""
	if a.user {
		kind, userFlag = "per-user service", " --user"
	}
	if a.err != nil {
		c.Status, c.Detail = checkWarn, "cannot query the service manager: "+a.err.Error()
		c.Fix = "fine when the agent is started another way (container, keygen-agent run); else run keygen-agent install"
		return c
	}
	switch a.st {
	case installer.StateRunning:
		c.Status, c.Detail = checkOK, kind+" installed and running"
	case installer.StateNotInstalled:
		c.Status, c.Detail = checkWarn, "not installed as a service"
		c.Fix = "keygen-agent install (as root/Administrator), or install --user; fine if the agent is run another way"
	default:
		c.Detail = fmt.Sprintf("%s installed but %s", kind, a.st)
		c.Fix = "keygen-agent start" + userFlag + "; see the service log (journalctl -u keygen-agent, Event Viewer, log show)"
		c.Status = checkFail
		if d.hello != nil {
			c.Status = checkWarn
			c.Detail += " (an agent answers on the socket: started another way)"
		}
	}
	return c
}

// checkClock compares the local clock with the agent's trusted-time
// watermark (state clock_tampered) and with Keygen's Date header.
func (d *doctor) checkClock() doctorCheck {
	c := doctorCheck{Check: "clock", Status: checkOK}
	var parts []string
	switch {
	case d.status != nil && d.status.State == string(agent.StateClockTampered):
		c.Status = checkFail
		parts = append(parts, "the agent reports the local clock behind its trusted time (clock_tampered)")
		c.Fix = "correct the system clock and enable time sync (timedatectl set-ntp true, w32tm /resync, sntp); the agent recovers at its next check"
	case d.status != nil && d.status.ClockSkew != nil:
		// Online the agent runs on Keygen's time; offline the wrong clock
		// shortens or (rolled back) ends offline use.
		c.Status = checkWarn
		parts = append(parts, "clock_skew: "+d.status.ClockSkew.Detail)
		c.Fix = "correct the system clock and enable time sync (timedatectl set-ntp true, w32tm /resync, sntp)"
	case d.status != nil:
		parts = append(parts, "the agent's trusted time agrees")
	default:
		parts = append(parts, "watermark not checked (agent not reachable)")
		if d.pingDate.IsZero() {
			c.Status, c.Fix = checkWarn, "see the socket and keygen checks"
		}
	}
	if !d.pingDate.IsZero() {
		off := time.Since(d.pingDate)
		if off < 0 {
			off = -off
		}
		if off > 5*time.Minute {
			if c.Status == checkOK {
				c.Status = checkWarn
			}
			parts = append(parts, fmt.Sprintf("local clock differs from Keygen's by %s", off.Round(time.Second)))
			if c.Fix == "" {
				c.Fix = "enable time sync (timedatectl set-ntp true, w32tm /resync, sntp): Keygen's signed responses older than 5m are refused"
			}
		} else {
			parts = append(parts, fmt.Sprintf("within %s of Keygen's clock", off.Round(time.Second)))
		}
	} else {
		parts = append(parts, "Keygen's clock not compared (not reachable)")
	}
	c.Detail = strings.Join(parts, "; ")
	return c
}

// dateCapture is a RoundTripper that remembers the last Date header.
type dateCapture struct {
	rt   http.RoundTripper
	mu   sync.Mutex
	date time.Time
}

func (t *dateCapture) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := t.rt.RoundTrip(r)
	if err == nil {
		if dt, perr := http.ParseTime(res.Header.Get("Date")); perr == nil {
			t.mu.Lock()
			t.date = dt
			t.mu.Unlock()
		}
	}
	return res, err
}

func (t *dateCapture) last() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.date
}

func (d *doctor) keygenConfig(publicKey string, hc *http.Client) keygen.Config {
	return keygen.Config{BaseURL: d.cfg.APIURL, Account: d.cfg.Account, Environment: d.cfg.Environment,
		APIVersion: d.cfg.APIVersion, PublicKey: publicKey, RSAPublicKey: d.cfg.RSAPublicKey,
		ECDSAPublicKey: d.cfg.ECDSAPublicKey, HTTPClient: hc, AgentVersion: version.Get(),
		// The clock check reports drift; here only the signature matters.
		MaxClockDrift: -1}
}

func newDoctorHTTPClient(timeout time.Duration) (*http.Client, *dateCapture) {
	dc := &dateCapture{rt: http.DefaultTransport.(*http.Transport).Clone()}
	return &http.Client{Transport: dc, Timeout: timeout}, dc
}

// checkKeygen pings Keygen (GET /v1/ping, unsigned).
func (d *doctor) checkKeygen() doctorCheck {
	c := doctorCheck{Check: "keygen"}
	if d.cfg == nil {
		c.Status, c.Detail, c.Fix = checkWarn, "not checked (the configuration does not load)", "fix the config check first"
		return c
	}
	hc, dc := newDoctorHTTPClient(d.timeout)
	kc, err := keygen.NewClient(d.keygenConfig("", hc))
	if err != nil {
		c.Status, c.Detail, c.Fix = checkFail, err.Error(), "correct api_url and account"
		return c
	}
	ctx, cancel := d.ctx()
	defer cancel()
	start := time.Now()
	err = kc.Ping(ctx)
	d.pingDate = dc.last()
	if err != nil {
		c.Status = checkFail
		c.Detail = fmt.Sprintf("GET %s/v1/ping: %v", strings.TrimRight(d.cfg.APIURL, "/"), err)
		c.Fix = "allow HTTPS to " + d.cfg.APIURL + " through the firewall or set HTTPS_PROXY; air-gapped machines: use keygen-agent import instead"
		return c
	}
	c.Status = checkOK
	c.Detail = fmt.Sprintf("%s/v1/ping answered in %s", strings.TrimRight(d.cfg.APIURL, "/"), time.Since(start).Round(time.Millisecond))
	return c
}

// checkSignature makes one signed request (validate-key with the configured
// license key) and verifies its signature with the configured public key.
func (d *doctor) checkSignature() doctorCheck {
	c := doctorCheck{Check: "signature"}
	if d.cfg == nil {
		c.Status, c.Detail, c.Fix = checkWarn, "not checked (the configuration does not load)", "fix the config check first"
		return c
	}
	if d.cfg.PublicKey == "" {
		c.Status, c.Detail = checkFail, "no public_key: responses are not verified (insecure_skip_verify)"
		c.Fix = "set public_key to your account's Ed25519 public key (Keygen dashboard → Settings)"
		return c
	}
	hc, _ := newDoctorHTTPClient(d.timeout)
	kc, err := keygen.NewClient(d.keygenConfig(d.cfg.PublicKey, hc))
	if err != nil {
		c.Status, c.Detail = checkFail, "public_key: "+err.Error()
		c.Fix = "set public_key to your account's Ed25519 public key, hex encoded (Keygen dashboard → Settings)"
		return c
	}
	if d.cfg.LicenseKey == "" {
		c.Status, c.Detail = checkWarn, "signature not checked (no license key)"
		c.Fix = "set license_key or KEYGEN_LICENSE_KEY to let doctor make a signed request"
		return c
	}
	ctx, cancel := d.ctx()
	defer cancel()
	v, err := kc.ValidateKey(ctx, d.cfg.LicenseKey, keygen.ValidateOptions{})
	switch {
	case errors.Is(err, keygen.ErrNotGenuine):
		c.Status, c.Detail = checkFail, "a response does not verify with the configured public_key: "+err.Error()
		c.Fix = "set public_key to the public key of account " + d.cfg.Account + " (Keygen dashboard → Settings); a proxy rewriting responses also causes this"
	case err != nil:
		c.Status, c.Detail = checkWarn, "not checked: validate-key failed: "+err.Error()
		c.Fix = "see the keygen check; a license key Keygen refuses cannot be used for this check"
	default:
		c.Status = checkOK
		res := "valid"
		if !v.Valid {
			res = "not valid"
		}
		if v.Code != "" {
			res += ", " + v.Code
		}
		c.Detail = fmt.Sprintf("validate-key response signed by the configured public key (license %s)", res)
	}
	return c
}

// checkFingerprint computes the fingerprint twice and compares the reads,
// and with the agent's when it answers.
func (d *doctor) checkFingerprint() doctorCheck {
	c := doctorCheck{Check: "fingerprint"}
	appID := ""
	if d.cfg != nil {
		appID = d.cfg.AppID
	} else {
		appID, _ = resolveAppID("", d.e.getenv)
	}
	ctx, cancel := d.ctx()
	defer cancel()
	o := fingerprint.Options{AppID: appID, Getenv: d.e.getenv}
	a, err := fingerprint.Compute(ctx, o)
	var b *fingerprint.Result
	if err == nil {
		b, err = fingerprint.Compute(ctx, o)
	}
	if err != nil {
		c.Status, c.Detail = checkFail, err.Error()
		c.Fix = "give the machine a stable identity: KEYGEN_AGENT_MACHINE_ID (containers) or /etc/machine-id; see keygen-agent fingerprint --explain"
		return c
	}
	if a.Fingerprint != b.Fingerprint {
		c.Status, c.Detail = checkFail, "the machine fingerprint changed between two reads"
		c.Fix = "the identity source is unstable: set KEYGEN_AGENT_MACHINE_ID; see keygen-agent fingerprint --explain"
		return c
	}
	c.Status = checkOK
	c.Detail = fmt.Sprintf("%s stable across two reads (source %s, %d components)", shortFP(a.Fingerprint), a.IdentitySource, len(a.Components))
	if changed := unstableComponents(a.Components, b.Components); len(changed) > 0 {
		c.Status = checkWarn
		c.Detail += "; components differ between reads: " + strings.Join(changed, ", ")
		c.Fix = "an unstable component can trip hardware-change detection; see keygen-agent fingerprint --explain"
	}
	if d.status != nil && d.status.Machine != nil && d.status.Machine.Fingerprint != "" && d.status.Machine.Fingerprint != a.Fingerprint {
		c.Status = checkWarn
		c.Detail += fmt.Sprintf("; the agent uses %s", shortFP(d.status.Machine.Fingerprint))
		c.Fix = "app_id or KEYGEN_AGENT_MACHINE_ID differ between this shell and the agent: run doctor with the agent's config and environment"
	}
	return c
}

func unstableComponents(a, b []fingerprint.Component) []string {
	fp := func(l []fingerprint.Component) map[string]string {
		m := map[string]string{}
		for _, c := range l {
			m[c.Name] = c.Fingerprint
		}
		return m
	}
	ma, mb := fp(a), fp(b)
	var out []string
	for n, v := range ma {
		if mb[n] != v {
			out = append(out, n)
		}
	}
	for n := range mb {
		if _, ok := ma[n]; !ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// checkCertificate reports the license state, the age of the last sync and
// the offline window, from the agent's license.status.
func (d *doctor) checkCertificate() doctorCheck {
	c := doctorCheck{Check: "certificate"}
	st := d.status
	if st == nil {
		c.Status, c.Detail = checkWarn, "not checked (agent not reachable)"
		if d.statusErr != nil {
			c.Detail = "not checked: license.status failed: " + errMessage(d.statusErr)
		}
		c.Fix = "see the socket check"
		return c
	}
	var parts []string
	parts = append(parts, "state "+st.State)
	if st.LastSync != nil && !st.LastSync.IsZero() {
		parts = append(parts, fmt.Sprintf("last sync %s ago", time.Since(*st.LastSync).Round(time.Second)))
	} else {
		parts = append(parts, "never synced")
	}
	if st.OfflineUntil != nil {
		parts = append(parts, "offline use allowed until "+st.OfflineUntil.Local().Format(time.RFC3339))
	}
	if st.Code != "" || st.Detail != "" {
		parts = append(parts, strings.TrimSpace(st.Code+" "+st.Detail))
	}
	c.Detail = strings.Join(parts, ", ")
	switch agent.State(st.State) {
	case agent.StateActive:
		c.Status = checkOK
		if !st.Valid {
			c.Status, c.Fix = checkFail, "the license does not allow use: see keygen-agent status"
		}
	case agent.StateOffline:
		c.Status = checkWarn
		c.Fix = "restore HTTPS access to Keygen before the offline window ends (see the keygen check)"
	case agent.StateStarting:
		c.Status, c.Fix = checkWarn, "the agent is starting: run doctor again in a few seconds"
	case agent.StateUnlicensed:
		c.Status, c.Fix = checkFail, "keygen-agent activate KEY (or set license_key in the config)"
	case agent.StateNotActivated:
		c.Status, c.Fix = checkFail, "keygen-agent activate (the machine was deactivated)"
	case agent.StateOfflineExpired:
		c.Status, c.Fix = checkFail, "reconnect to Keygen (see the keygen check), or import a fresh machine file: keygen-agent import FILE"
	case agent.StateHardwareChanged:
		c.Status, c.Fix = checkFail, "the hardware changed since activation: keygen-agent deactivate, then activate again (or ask the vendor)"
	case agent.StateClockTampered:
		c.Status, c.Fix = checkFail, "see the clock check"
	case agent.StateExpired, agent.StateSuspended, agent.StateInvalid:
		c.Status, c.Fix = checkFail, "the license was refused by Keygen: contact the vendor"
		if st.Valid {
			c.Status = checkWarn
		}
	default:
		c.Status, c.Fix = checkFail, "see the agent's log (journalctl -u keygen-agent, or the terminal running keygen-agent run)"
	}
	return c
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
