package installer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"

	"github.com/kardianos/service"

	"github.com/keygen-agent/keygen-agent/internal/paths"
)

// Service identity.
const (
	ServiceName        = paths.Name
	ServiceDisplayName = "Keygen Agent"
	ServiceDescription = "Keygen licensing agent: validates this machine's license and grants seats to local apps"
	// SocketName is the socket's file name inside the socket directory.
	SocketName = paths.SocketName
	// ConfigName is the config file's name inside the config directory.
	ConfigName = paths.ConfigName
	// ExitBadConfig is the daemon's "bad configuration, do not restart" exit
	// code; the unit carries it as RestartPreventExitStatus.
	ExitBadConfig = 3
)

// ErrUnsupported reports a mode the target OS cannot do, such as a per-user
// service on Windows.
var ErrUnsupported = errors.New("not supported on this platform")

// Options describe an installation. Zero values take the OS defaults.
type Options struct {
	// User installs a per-user service (systemd --user unit, launchd
	// LaunchAgent) that needs no admin rights.
	User bool
	// Executable is the agent binary the service runs; default the running
	// executable.
	Executable string
	// Args are the arguments the service passes; default
	// ["run", "--config", ConfigPath].
	Args []string
	// ConfigPath, DataDir and SocketDir default per OS and mode to the
	// layout of internal/paths (its package comment has the table); a
	// named pipe has no socket directory.
	ConfigPath, DataDir, SocketDir string
	// Group is the group allowed to use the socket (system mode only).
	Group string
	// Env is added to the service's environment.
	Env map[string]string
	// Config is the config file content to write. When nil, CopyConfigFrom
	// names a file to copy; when both are empty an existing config is kept
	// and a commented skeleton is written if there is none.
	Config         []byte
	CopyConfigFrom string
	// OS is the target GOOS; default runtime.GOOS. Other values only render
	// plans (golden tests, --dry-run); Apply refuses them.
	OS string
	// Root prefixes every path the plan writes (staging images, tests).
	Root string
	// Home and Getenv resolve per-user paths; defaults os.UserHomeDir and
	// os.Getenv.
	Home   string
	Getenv func(string) string
}

// Dir is one directory the agent needs.
type Dir struct {
	Path    string // as the service sees it (without Root)
	Mode    fs.FileMode
	Group   string // "" keeps the creator's group
	Purpose string // "config", "data" or "socket"
}

// Plan is everything an install does, computed without touching the system.
type Plan struct {
	OS   string
	User bool
	Root string

	// Service is handed to kardianos service.New. Its Option carries our
	// SystemdScript or LaunchdConfig template and the platform options.
	Service service.Config

	// ServiceFile is where the unit or plist lands ("" on Windows) and
	// ServiceText its rendered content, as kardianos will write it.
	ServiceFile string
	ServiceText string

	Dirs []Dir

	ConfigPath string
	// ConfigData is written to ConfigPath when non-nil; ConfigMode is 0600
	// when it holds a license key, 0640 otherwise.
	ConfigData []byte
	ConfigMode fs.FileMode
	// ConfigIsSkeleton marks ConfigData as the commented default, written
	// only when no config exists yet.
	ConfigIsSkeleton bool

	DataDir    string
	SocketDir  string
	SocketPath string // "" on Windows (named pipe)
}

// Path returns p prefixed with the plan's Root.
func (pl *Plan) Path(p string) string {
	if pl.Root == "" || p == "" {
		return p
	}
	return filepath.Join(pl.Root, p)
}

// NewPlan derives a Plan from o. It does not modify the system; it reads the
// file named by o.CopyConfigFrom and the running executable's path.
func NewPlan(o Options) (*Plan, error) {
	goos := o.OS
	if goos == "" {
		goos = runtime.GOOS
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	home := o.Home
	if home == "" && o.User {
		h, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("per-user install: %w", err)
		}
		home = h
	}
	lay, err := defaultLayout(goos, o.User, home, getenv)
	if err != nil {
		return nil, err
	}
	p := &Plan{OS: goos, User: o.User, Root: o.Root, ServiceFile: lay.serviceFile}
	p.ConfigPath = pick(o.ConfigPath, lay.configPath)
	p.DataDir = pick(o.DataDir, lay.dataDir)
	p.SocketDir = pick(o.SocketDir, lay.socketDir)
	if p.SocketDir != "" {
		p.SocketPath = lay.join(p.SocketDir, SocketName)
	}
	if o.Group != "" && !validGroup(o.Group) {
		return nil, fmt.Errorf("socket group %q: not a valid group name", o.Group)
	}
	if o.User && o.Group != "" {
		return nil, errors.New("--socket-group applies to system installs only")
	}
	for _, s := range []string{p.ConfigPath, p.DataDir, p.SocketDir} {
		if !lay.isAbs(s) && s != "" {
			return nil, fmt.Errorf("path %q is not absolute", s)
		}
	}

	exe := o.Executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find executable: %w", err)
		}
	}
	args := o.Args
	if args == nil {
		args = []string{"run", "--config", p.ConfigPath}
	}
	for _, s := range append([]string{exe, p.ConfigPath, p.DataDir, p.SocketDir, o.Group}, args...) {
		if strings.ContainsAny(s, "\n\r\x00") || strings.Contains(s, "{{") || strings.Contains(s, "}}") {
			return nil, fmt.Errorf("value %q contains a newline, NUL or template braces", s)
		}
	}
	for k, v := range o.Env {
		if k == "" || strings.ContainsAny(k, "= \t\n\r\x00") || strings.ContainsAny(v, "\n\r\x00") || strings.Contains(k+v, "{{") {
			return nil, fmt.Errorf("environment variable %q: bad name or value", k)
		}
	}

	p.Service = service.Config{
		Name:        ServiceName,
		DisplayName: ServiceDisplayName,
		Description: ServiceDescription,
		Executable:  exe,
		Arguments:   args,
		EnvVars:     o.Env,
		Option:      service.KeyValue{},
	}

	// Directories.
	p.Dirs = append(p.Dirs, Dir{Path: lay.dir(p.ConfigPath), Mode: 0o755, Purpose: "config"})
	p.Dirs = append(p.Dirs, Dir{Path: p.DataDir, Mode: 0o700, Purpose: "data"})
	if p.SocketDir != "" && p.SocketDir != lay.dir(p.ConfigPath) && p.SocketDir != p.DataDir {
		p.Dirs = append(p.Dirs, Dir{Path: p.SocketDir, Mode: 0o750, Group: o.Group, Purpose: "socket"})
	}

	// Config file.
	switch {
	case o.Config != nil:
		p.ConfigData = o.Config
	case o.CopyConfigFrom != "":
		b, err := os.ReadFile(o.CopyConfigFrom)
		if err != nil {
			return nil, fmt.Errorf("read config to copy: %w", err)
		}
		p.ConfigData = b
	default:
		b, err := RenderConfig(ConfigValues{DataDir: p.DataDir, Socket: p.SocketPath, SocketGroup: o.Group})
		if err != nil {
			return nil, err
		}
		p.ConfigData, p.ConfigIsSkeleton = b, true
	}
	p.ConfigMode = 0o640
	if containsLicenseKey(p.ConfigData) {
		p.ConfigMode = 0o600
	}

	if err := p.platform(o, lay); err != nil {
		return nil, err
	}
	return p, nil
}

func pick(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

// layout holds an OS's default paths and its path syntax.
type layout struct {
	windows                                     bool
	configPath, dataDir, socketDir, serviceFile string
	logDir                                      string
}

func (l layout) join(elem ...string) string {
	if l.windows {
		return strings.Join(elem, `\`)
	}
	return path.Join(elem...)
}

func (l layout) dir(p string) string {
	if l.windows {
		if i := strings.LastIndexAny(p, `\/`); i > 0 {
			return p[:i]
		}
		return p
	}
	return path.Dir(p)
}

func (l layout) isAbs(p string) bool {
	if l.windows {
		return len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/') || strings.HasPrefix(p, `\\`)
	}
	return strings.HasPrefix(p, "/")
}

// defaultLayout is internal/paths' layout of goos plus the service
// manager's files.
func defaultLayout(goos string, user bool, home string, getenv func(string) string) (layout, error) {
	const n = ServiceName
	switch goos {
	case "linux", "darwin":
	case "windows":
		if user {
			return layout{}, fmt.Errorf("per-user service on windows: %w (Windows services need an administrator; install system-wide)", ErrUnsupported)
		}
	default:
		return layout{}, fmt.Errorf("os %q: %w", goos, ErrUnsupported)
	}
	d := paths.For(goos, user, paths.Env{Home: home, Getenv: getenv, UID: os.Getuid()})
	l := layout{windows: d.Windows, configPath: d.ConfigFile, dataDir: d.DataDir, socketDir: d.SocketDir}
	switch {
	case goos == "linux" && user:
		l.serviceFile = path.Join(home, ".config/systemd/user", n+".service")
	case goos == "linux":
		l.serviceFile = "/etc/systemd/system/" + n + ".service"
	case goos == "darwin" && user:
		l.serviceFile = path.Join(home, "Library/LaunchAgents", n+".plist")
		l.logDir = path.Join(home, "Library/Logs", n)
	case goos == "darwin":
		l.serviceFile = "/Library/LaunchDaemons/" + n + ".plist"
		l.logDir = "/Library/Logs/" + n
	}
	return l, nil
}

// platform fills the OS-specific options and renders the service file.
func (p *Plan) platform(o Options, lay layout) error {
	kv := p.Service.Option
	switch p.OS {
	case "linux":
		kv["UserService"] = p.User
		kv["Restart"] = "always"
		script := systemdScript(p, o.Group)
		kv["SystemdScript"] = script
		text, err := renderTmpl(script, map[string]any{
			"Description": p.Service.Description,
			"Path":        p.Service.Executable,
			"Name":        p.Service.Name,
			"Arguments":   nonNil(p.Service.Arguments),
			"EnvVars":     envLines(p.Service.EnvVars, func(k, v string) string { return "Environment=" + k + "=" + v }),
		}, systemdFuncs)
		if err != nil {
			return fmt.Errorf("render systemd unit: %w", err)
		}
		p.ServiceText = text
	case "darwin":
		kv["UserService"] = p.User
		kv["RunAtLoad"] = true
		kv["KeepAlive"] = true
		kv["SessionCreate"] = false
		// The agent writes its log itself, bounded (launchd appends to
		// StandardOutPath/StandardErrorPath forever), and cuts the file
		// its stderr goes to at start; custom arguments are left alone.
		logFile, errFile := launchdLogFiles(lay.logDir)
		if a := p.Service.Arguments; len(a) > 0 && a[0] == "run" && !slices.Contains(a, "--log-file") {
			p.Service.Arguments = append(slices.Clip(a), "--log-file", logFile, "--stderr-file", errFile)
		}
		script := launchdScript(p, lay.logDir)
		kv["LaunchdConfig"] = script
		p.Dirs = append(p.Dirs, Dir{Path: lay.logDir, Mode: 0o750, Purpose: "logs"})
		text, err := renderTmpl(script, map[string]any{
			"Name":          p.Service.Name,
			"Path":          p.Service.Executable,
			"Arguments":     nonNil(p.Service.Arguments),
			"KeepAlive":     "true",
			"RunAtLoad":     "true",
			"SessionCreate": "false",
			"EnvVars": envLines(p.Service.EnvVars, func(k, v string) string {
				return "\t\t<key>" + xmlEscape(k) + "</key>\n\t\t<string>" + xmlEscape(v) + "</string>"
			}),
		}, launchdFuncs)
		if err != nil {
			return fmt.Errorf("render launchd plist: %w", err)
		}
		p.ServiceText = text
	case "windows":
		kv["StartType"] = "automatic"
		kv["DelayedAutoStart"] = false
		kv["OnFailure"] = "restart"
		kv["OnFailureDelayDuration"] = "2s"
		kv["OnFailureResetPeriod"] = 86400
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// envLines formats env sorted by key, as kardianos does.
func envLines(env map[string]string, f func(k, v string) string) []string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := []string{}
	for _, k := range keys {
		out = append(out, f(k, env[k]))
	}
	return out
}

func validGroup(g string) bool {
	for _, r := range g {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return g != "" && len(g) <= 64
}
