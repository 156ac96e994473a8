package installer

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func fakeEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func goldenPlan(t *testing.T, goos string, user bool) *Plan {
	t.Helper()
	o := Options{
		OS:         goos,
		User:       user,
		Executable: "/usr/local/bin/keygen-agent",
		Home:       "/home/alice",
		Getenv:     fakeEnv(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000", "ProgramData": `C:\ProgramData`}),
		Env:        map[string]string{"KEYGEN_ENVIRONMENT": "production"},
	}
	switch goos {
	case "darwin":
		o.Home = "/Users/alice"
		o.Executable = "/Applications/Vendor App.app/Contents/MacOS/keygen-agent"
	case "windows":
		o.Executable = `C:\Program Files\Vendor\keygen-agent.exe`
	}
	if !user && goos != "windows" {
		o.Group = "keygen"
	}
	p, err := NewPlan(o)
	if err != nil {
		t.Fatalf("NewPlan(%s, user=%v): %v", goos, user, err)
	}
	return p
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./installer -update)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from golden (rerun with -update if intended):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestGolden(t *testing.T) {
	for _, c := range []struct {
		name string
		goos string
		user bool
		text bool // golden of ServiceText, else of Describe
	}{
		{"systemd-system.service", "linux", false, true},
		{"systemd-user.service", "linux", true, true},
		{"launchd-system.plist", "darwin", false, true},
		{"launchd-user.plist", "darwin", true, true},
		{"linux-system.plan", "linux", false, false},
		{"darwin-user.plan", "darwin", true, false},
		{"windows-system.plan", "windows", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := goldenPlan(t, c.goos, c.user)
			got := p.Describe()
			if c.text {
				got = p.ServiceText
			}
			checkGolden(t, c.name, got)
		})
	}
}

func TestUnitContents(t *testing.T) {
	sys := goldenPlan(t, "linux", false).ServiceText
	usr := goldenPlan(t, "linux", true).ServiceText
	for _, want := range []string{"Restart=always\n", "RestartSec=2\n", "RestartPreventExitStatus=3\n",
		"RuntimeDirectory=keygen-agent\n", "RuntimeDirectoryMode=0750\n", "StateDirectoryMode=0700\n",
		"ProtectSystem=strict\n", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n",
		"WantedBy=multi-user.target\n", "Group=keygen\n",
		`ExecStart=/usr/local/bin/keygen-agent "run" "--config" "/etc/keygen-agent/agent.toml"`,
		"Environment=KEYGEN_ENVIRONMENT=production\n"} {
		if !strings.Contains(sys, want) {
			t.Errorf("system unit lacks %q", want)
		}
	}
	for _, bad := range []string{"RestartSec=120", "PrivateDevices", "ProtectClock", "DevicePolicy"} {
		if strings.Contains(sys, bad) {
			t.Errorf("system unit has %q", bad)
		}
	}
	if !strings.Contains(usr, "WantedBy=default.target\n") || strings.Contains(usr, "multi-user") {
		t.Errorf("user unit must be wanted by default.target only:\n%s", usr)
	}
	if strings.Contains(usr, "ProtectSystem") {
		t.Error("user unit carries mount-namespace hardening a user manager cannot apply")
	}
	mac := goldenPlan(t, "darwin", false)
	if !strings.Contains(mac.ServiceText, "<string>/Applications/Vendor App.app/Contents/MacOS/keygen-agent</string>") ||
		!strings.Contains(mac.ServiceText, "<key>RunAtLoad</key>\n\t<true/>") ||
		!strings.Contains(mac.ServiceText, "<key>KeepAlive</key>\n\t<dict>\n\t\t<key>SuccessfulExit</key>\n\t\t<false/>\n\t</dict>") ||
		strings.Contains(mac.ServiceText, "<key>KeepAlive</key>\n\t<true/>") {
		// KeepAlive=true restarts even a clean "bad config" exit (issue 17 item 4).
		t.Errorf("plist:\n%s", mac.ServiceText)
	}
	if mac.Service.Option["RunAtLoad"] != true {
		t.Error("RunAtLoad option must be set explicitly on macOS")
	}
	win := goldenPlan(t, "windows", false)
	if win.Service.Option["OnFailure"] != "restart" || win.Service.Option["StartType"] != "automatic" || win.ServiceFile != "" {
		t.Errorf("windows options: %v", win.Service.Option)
	}
	if win.ConfigPath != `C:\ProgramData\keygen-agent\agent.toml` || win.SocketPath != "" {
		t.Errorf("windows paths: %q %q", win.ConfigPath, win.SocketPath)
	}
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on the rendered units
// when the binary exists (it works offline, without systemd as PID 1).
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []bool{false, true} {
		p, err := NewPlan(Options{OS: "linux", User: user, Executable: exe, Home: t.TempDir(),
			Getenv: fakeEnv(nil), Env: map[string]string{"A": "b"}})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		unit := filepath.Join(dir, ServiceName+".service")
		if err := os.WriteFile(unit, []byte(p.ServiceText), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"verify", unit}
		if user {
			args = []string{"--user", "verify", unit}
		}
		cmd := exec.Command(sa, args...)
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=warning", "HOME="+dir, "XDG_RUNTIME_DIR="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			if user && strings.Contains(string(out), "XDG_RUNTIME_DIR") {
				t.Logf("user verify unavailable here: %s", out)
				continue
			}
			t.Errorf("systemd-analyze %v: %v\n%s\n%s", args, err, out, p.ServiceText)
		}
		// Warnings about our own unit (not about the host's units) fail too.
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, ServiceName+".service") {
				t.Errorf("systemd-analyze warns: %s", l)
			}
		}
	}
}

func TestNewPlanErrors(t *testing.T) {
	base := Options{OS: "linux", Executable: "/bin/kga", Getenv: fakeEnv(nil), Home: "/h"}
	for name, mod := range map[string]func(*Options){
		"windows user":  func(o *Options) { o.OS, o.User = "windows", true },
		"unknown os":    func(o *Options) { o.OS = "plan9" },
		"relative data": func(o *Options) { o.DataDir = "data" },
		"bad group":     func(o *Options) { o.Group = "a b" },
		"user group":    func(o *Options) { o.User, o.Group = true, "staff" },
		"braces":        func(o *Options) { o.Args = []string{"{{Name}}"} },
		"newline":       func(o *Options) { o.Executable = "/bin/a\nExecStartPre=/bin/evil" },
		"env name":      func(o *Options) { o.Env = map[string]string{"A B": "c"} },
		"copy missing":  func(o *Options) { o.CopyConfigFrom = "/nonexistent/agent.toml" },
	} {
		o := base
		mod(&o)
		if _, err := NewPlan(o); err == nil {
			t.Errorf("%s: NewPlan succeeded", name)
		}
	}
	o := base
	o.OS, o.User = "windows", true
	if _, err := NewPlan(o); !errors.Is(err, ErrUnsupported) {
		t.Errorf("windows user: %v, want ErrUnsupported", err)
	}
}

func TestPlanDefaults(t *testing.T) {
	p, err := NewPlan(Options{OS: "linux", User: true, Executable: "/bin/kga", Home: "/home/bob",
		Getenv: fakeEnv(map[string]string{"XDG_CONFIG_HOME": "/cfg"})})
	if err != nil {
		t.Fatal(err)
	}
	if p.ConfigPath != "/cfg/keygen-agent/agent.toml" || p.DataDir != "/home/bob/.local/state/keygen-agent" ||
		p.SocketDir != fmt.Sprintf("/tmp/keygen-agent-%d", os.Getuid()) || p.ServiceFile != "/home/bob/.config/systemd/user/keygen-agent.service" {
		t.Errorf("user defaults without XDG_RUNTIME_DIR: %+v", p)
	}
	if got := p.Service.Arguments; len(got) != 3 || got[0] != "run" || got[2] != p.ConfigPath {
		t.Errorf("default args %q", got)
	}
}

func TestRenderConfig(t *testing.T) {
	v := ConfigValues{Account: "acme", Product: "p1", PublicKey: "ab", LicenseKey: `K-"1"\`, APIURL: "http://127.0.0.1:1",
		DataDir: `C:\ProgramData\keygen-agent\data`, Socket: "/run/keygen-agent/agent.sock", SocketGroup: "keygen"}
	b, err := RenderConfig(v)
	if err != nil {
		t.Fatal(err)
	}
	var back ConfigValues
	if _, err := toml.Decode(string(b), &back); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if back != v {
		t.Errorf("round trip: %+v != %+v", back, v)
	}
	if !containsLicenseKey(b) {
		t.Error("license key not detected")
	}
	if red := RedactConfig(string(b)); strings.Contains(red, "K-") || !strings.Contains(red, `license_key = "<redacted>"`) {
		t.Errorf("redaction:\n%s", red)
	}
	skel, _ := RenderConfig(ConfigValues{DataDir: "/d"})
	if containsLicenseKey(skel) || !strings.Contains(string(skel), "#account =") {
		t.Errorf("skeleton:\n%s", skel)
	}
	if !containsLicenseKey([]byte("not = [toml")) {
		t.Error("unparsable config must be treated as secret")
	}
}

func TestTemplateEngine(t *testing.T) {
	data := map[string]any{"A": "x y", "L": []string{"1", "2"}, "E": "", "N": []string{}}
	got, err := renderTmpl(`{{A | cmdEscape}}{{range L}}[{{. | cmd}}]{{end}}{{if E}}e{{else}}ne{{end}}{{if N}}n{{end}}{{if L}}l{{end}}`, data, systemdFuncs)
	if err != nil || got != `x\x20y["1"]["2"]nel` {
		t.Errorf("got %q, %v", got, err)
	}
	for _, bad := range []string{"{{A", "{{Missing}}", "{{A | nofn}}", "{{range A}}{{end}}", "{{if A}}", "{{end}}", "{{- A}}", "{{L}}", "{{range}}{{end}}"} {
		if _, err := renderTmpl(bad, data, systemdFuncs); err == nil {
			t.Errorf("%q rendered without error", bad)
		}
	}
}

func FuzzRenderTmpl(f *testing.F) {
	f.Add(systemdScript(&Plan{DataDir: "/d"}, "g"))
	f.Add(launchdScript(&Plan{}, "/l"))
	f.Add("{{if A}}{{range L}}{{.}}{{end}}{{else}}{{A | html}}{{end}}")
	f.Fuzz(func(t *testing.T, src string) {
		data := map[string]any{"A": "a", "L": []string{"x"}, "Description": "d", "Path": "/p", "Arguments": []string{"a"},
			"EnvVars": []string{}, "Name": "n", "RunAtLoad": "true", "KeepAlive": "true"}
		out, err := renderTmpl(src, data, launchdFuncs)
		if err == nil && !strings.Contains(src, "{{") && out != src {
			t.Errorf("plain text changed: %q -> %q", src, out)
		}
	})
}
