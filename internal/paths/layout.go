package paths

import (
	"path"
	"strconv"
	"strings"
)

// File and directory names.
const (
	// Name is the product's directory name and the service's name.
	Name = "keygen-agent"
	// ConfigName is the config file's name inside the config directory.
	ConfigName = "agent.toml"
	// SocketName is the socket's file name inside the socket directory.
	SocketName = "agent.sock"
	// CacheName is the cache file's name inside the data directory.
	CacheName = "agent.db"
	// ImportDirName is the import directory's name inside the data directory.
	ImportDirName = "import"
	// PipePrefix is the machine-wide named pipe; a per-user agent's pipe
	// adds "-<user SID>".
	PipePrefix = `\\.\pipe\` + Name
)

// Layout is one OS's default locations for a machine-wide (system) or a
// per-user agent. Paths use the target OS's separators.
type Layout struct {
	ConfigFile string
	DataDir    string
	// Socket is the socket file, or the named pipe on Windows.
	Socket string
	// SocketDir is Socket's directory; "" for a named pipe.
	SocketDir string
	// Windows reports Windows path syntax.
	Windows bool
}

// Env is what a layout depends on besides GOOS.
type Env struct {
	// Home is the user's home directory (per-user layouts).
	Home string
	// Getenv reads XDG_*, ProgramData and LOCALAPPDATA; nil reads nothing.
	Getenv func(string) string
	// UID names the per-user fallback socket directory on unix.
	UID int
	// UserSID suffixes the per-user named pipe on Windows.
	UserSID string
}

func (e Env) getenv(k string) string {
	if e.Getenv == nil {
		return ""
	}
	return e.Getenv(k)
}

// absEnv is the variable k when it holds an absolute unix path, else def.
func (e Env) absEnv(k, def string) string {
	if v := e.getenv(k); strings.HasPrefix(v, "/") {
		return v
	}
	return def
}

// maxSocketPath is sizeof(sun_path) including the NUL: 104 on macOS and
// the BSDs, 108 on Linux.
func maxSocketPath(goos string) int {
	if goos == "linux" {
		return 108
	}
	return 104
}

// For returns the default layout of goos. It reads nothing but env, so
// any OS's layout can be computed anywhere.
func For(goos string, user bool, env Env) Layout {
	var l Layout
	switch goos {
	case "windows":
		return windowsLayout(user, env)
	case "darwin":
		if !user {
			base := "/Library/Application Support/" + Name
			l = Layout{ConfigFile: base + "/" + ConfigName, DataDir: base + "/data", SocketDir: "/var/run/" + Name}
			break
		}
		base := path.Join(env.Home, "Library/Application Support", Name)
		l = Layout{ConfigFile: base + "/" + ConfigName, DataDir: base + "/data", SocketDir: base}
		if len(path.Join(base, SocketName)) >= maxSocketPath(goos) {
			l.SocketDir = tmpSocketDir(env)
		}
	case "linux":
		if !user {
			l = Layout{ConfigFile: "/etc/" + Name + "/" + ConfigName, DataDir: "/var/lib/" + Name, SocketDir: "/run/" + Name}
			break
		}
		l = xdgLayout(env)
	default: // the BSDs and other unix
		if !user {
			l = Layout{ConfigFile: "/usr/local/etc/" + Name + "/" + ConfigName, DataDir: "/var/db/" + Name, SocketDir: "/var/run/" + Name}
			break
		}
		l = xdgLayout(env)
	}
	l.Socket = path.Join(l.SocketDir, SocketName)
	return l
}

func xdgLayout(env Env) Layout {
	l := Layout{
		ConfigFile: path.Join(env.absEnv("XDG_CONFIG_HOME", path.Join(env.Home, ".config")), Name, ConfigName),
		DataDir:    path.Join(env.absEnv("XDG_STATE_HOME", path.Join(env.Home, ".local/state")), Name),
		SocketDir:  tmpSocketDir(env),
	}
	if rt := env.absEnv("XDG_RUNTIME_DIR", ""); rt != "" {
		l.SocketDir = path.Join(rt, Name)
	}
	return l
}

func tmpSocketDir(env Env) string { return "/tmp/" + Name + "-" + strconv.Itoa(env.UID) }

func windowsLayout(user bool, env Env) Layout {
	if user {
		base := env.getenv("LOCALAPPDATA")
		if base == "" {
			base = env.Home + `\AppData\Local`
		}
		base += `\` + Name
		pipe := PipePrefix + "-user"
		if env.UserSID != "" {
			pipe = PipePrefix + "-" + env.UserSID
		}
		return Layout{Windows: true, ConfigFile: base + `\` + ConfigName, DataDir: base + `\data`, Socket: pipe}
	}
	pd := env.getenv("ProgramData")
	if pd == "" {
		pd = `C:\ProgramData`
	}
	base := pd + `\` + Name
	return Layout{Windows: true, ConfigFile: base + `\` + ConfigName, DataDir: base + `\data`, Socket: PipePrefix}
}

// CacheFile is the cache file inside dataDir.
func CacheFile(dataDir string) string { return join(dataDir, CacheName) }

// ImportDir is the default import directory inside dataDir.
func ImportDir(dataDir string) string { return join(dataDir, ImportDirName) }
