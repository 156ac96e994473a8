package paths

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestFor(t *testing.T) {
	env := func(kv ...string) Env {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return Env{Home: "/home/bob", UID: 1000, Getenv: func(k string) string { return m[k] }}
	}
	longHome := "/Users/" + strings.Repeat("x", 80)
	for _, tc := range []struct {
		name string
		goos string
		user bool
		env  Env
		want Layout
	}{
		{"linux system", "linux", false, env(), Layout{ConfigFile: "/etc/keygen-agent/agent.toml", DataDir: "/var/lib/keygen-agent",
			Socket: "/run/keygen-agent/agent.sock", SocketDir: "/run/keygen-agent"}},
		{"linux user xdg", "linux", true, env("XDG_CONFIG_HOME", "/c", "XDG_STATE_HOME", "/s", "XDG_RUNTIME_DIR", "/run/user/1000"),
			Layout{ConfigFile: "/c/keygen-agent/agent.toml", DataDir: "/s/keygen-agent",
				Socket: "/run/user/1000/keygen-agent/agent.sock", SocketDir: "/run/user/1000/keygen-agent"}},
		{"linux user relative xdg ignored", "linux", true, env("XDG_CONFIG_HOME", "rel", "XDG_RUNTIME_DIR", "rel"),
			Layout{ConfigFile: "/home/bob/.config/keygen-agent/agent.toml", DataDir: "/home/bob/.local/state/keygen-agent",
				Socket: "/tmp/keygen-agent-1000/agent.sock", SocketDir: "/tmp/keygen-agent-1000"}},
		{"darwin system", "darwin", false, env(), Layout{ConfigFile: "/Library/Application Support/keygen-agent/agent.toml",
			DataDir: "/Library/Application Support/keygen-agent/data", Socket: "/var/run/keygen-agent/agent.sock", SocketDir: "/var/run/keygen-agent"}},
		{"darwin user", "darwin", true, Env{Home: "/Users/bob", UID: 501}, Layout{ConfigFile: "/Users/bob/Library/Application Support/keygen-agent/agent.toml",
			DataDir: "/Users/bob/Library/Application Support/keygen-agent/data", Socket: "/Users/bob/Library/Application Support/keygen-agent/agent.sock",
			SocketDir: "/Users/bob/Library/Application Support/keygen-agent"}},
		{"darwin user, home too long for sun_path", "darwin", true, Env{Home: longHome, UID: 501}, Layout{
			ConfigFile: longHome + "/Library/Application Support/keygen-agent/agent.toml", DataDir: longHome + "/Library/Application Support/keygen-agent/data",
			Socket: "/tmp/keygen-agent-501/agent.sock", SocketDir: "/tmp/keygen-agent-501"}},
		{"freebsd system", "freebsd", false, env(), Layout{ConfigFile: "/usr/local/etc/keygen-agent/agent.toml", DataDir: "/var/db/keygen-agent",
			Socket: "/var/run/keygen-agent/agent.sock", SocketDir: "/var/run/keygen-agent"}},
		{"windows system", "windows", false, env("ProgramData", `D:\PD`), Layout{Windows: true, ConfigFile: `D:\PD\keygen-agent\agent.toml`,
			DataDir: `D:\PD\keygen-agent\data`, Socket: `\\.\pipe\keygen-agent`}},
		{"windows system default", "windows", false, Env{}, Layout{Windows: true, ConfigFile: `C:\ProgramData\keygen-agent\agent.toml`,
			DataDir: `C:\ProgramData\keygen-agent\data`, Socket: `\\.\pipe\keygen-agent`}},
		{"windows user", "windows", true, Env{UserSID: "S-1-5-21-1", Getenv: func(k string) string {
			if k == "LOCALAPPDATA" {
				return `C:\Users\bob\AppData\Local`
			}
			return ""
		}}, Layout{Windows: true, ConfigFile: `C:\Users\bob\AppData\Local\keygen-agent\agent.toml`,
			DataDir: `C:\Users\bob\AppData\Local\keygen-agent\data`, Socket: `\\.\pipe\keygen-agent-S-1-5-21-1`}},
	} {
		if got := For(tc.goos, tc.user, tc.env); got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

func TestDataDirFiles(t *testing.T) {
	if got, want := CacheFile(filepath.Join("d", "x")), filepath.Join("d", "x", "agent.db"); got != want {
		t.Errorf("CacheFile %q, want %q", got, want)
	}
	if got, want := ImportDir("d"), filepath.Join("d", "import"); got != want {
		t.Errorf("ImportDir %q, want %q", got, want)
	}
}

// TestRunningOS: System and User are the table applied to this machine.
func TestRunningOS(t *testing.T) {
	for _, l := range []Layout{System(), User()} {
		if l.ConfigFile == "" || l.DataDir == "" || l.Socket == "" {
			t.Errorf("incomplete layout %+v", l)
		}
		if !l.Windows && filepath.Join(l.SocketDir, SocketName) != l.Socket {
			t.Errorf("socket %q not in socket dir %q", l.Socket, l.SocketDir)
		}
	}
}
