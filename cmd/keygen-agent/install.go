package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"github.com/BurntSushi/toml"
	"github.com/keygen-agent/keygen-agent/installer"
	"github.com/keygen-agent/keygen-agent/ipc"
)

func init() {
	register(verb{name: "install", summary: "install the agent as an OS service (idempotent)", run: runInstall})
	register(verb{name: "uninstall", summary: "remove the OS service (--purge also removes data)", run: runUninstall})
}

// Hooks replaced by tests: the service manager and the agent call used by
// uninstall --deactivate.
var (
	serviceBackend = func(p *installer.Plan) (installer.Backend, error) {
		if p.Root != "" {
			return installer.NewStagingBackend(p)
		}
		return installer.NewBackend(p)
	}
	deactivateAgent = func(ctx context.Context, socket string) error {
		c, err := ipc.Dial(ctx, socket)
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Call(ctx, ipc.MethodDeactivate, nil, nil)
	}
)

// serviceFlags are the flags every service verb shares.
type serviceFlags struct {
	user    bool
	root    string
	dataDir string
}

func (sf *serviceFlags) add(fs *flag.FlagSet) {
	fs.BoolVar(&sf.user, "user", false, "per-user service (systemd --user, LaunchAgent) instead of a system one")
	fs.StringVar(&sf.root, "root", "", "prefix every path with `DIR` and only write files (staging an image)")
	fs.StringVar(&sf.dataDir, "data-dir", "", "data (cache) `DIR` (default: the OS's standard path)")
}

const installHelp = `The service runs "keygen-agent run --config <config>". The config file is
written from the flags (TOML keys account, product, public_key, license_key,
api_url, environment, data_dir, socket, socket_group), copied from --config, or,
when neither is given, an existing config is kept and a commented one is
written if there is none. A config holding a license key gets mode 0600.

Re-running install updates the files and the service definition; it never
fails because the service exists. Per OS: systemd unit (Restart=always,
RestartSec=2, RuntimeDirectory for the socket, hardening), launchd plist
(RunAtLoad, KeepAlive), Windows service (automatic start, restart on failure).

exit codes: 0 ok, 1 failed, 2 usage, 5 permission denied (run as root or
Administrator, or use --user)`

func runInstall(e *env) int {
	fs := newFlagSet(e, "install", "", "Install keygen-agent as an OS service and start it.", installHelp)
	var sf serviceFlags
	sf.add(fs)
	var v installer.ConfigValues
	copyFrom := fs.String("config", "", "copy this config `FILE` into place")
	fs.StringVar(&v.Account, "account", "", "Keygen account id or slug")
	fs.StringVar(&v.Product, "product", "", "Keygen product id")
	fs.StringVar(&v.PublicKey, "public-key", "", "account Ed25519 public key (hex)")
	fs.StringVar(&v.LicenseKey, "license-key", "", "license key to write into the config (kept with mode 0600)")
	fs.StringVar(&v.APIURL, "api-url", "", "Keygen API URL (default https://api.keygen.sh)")
	fs.StringVar(&v.Environment, "environment", "", "Keygen environment")
	group := fs.String("socket-group", "", "group whose members may use the socket (system services, unix)")
	exe := fs.String("executable", "", "agent binary the service runs (default: this one)")
	dryRun := fs.Bool("dry-run", false, "print the plan (directories, config, unit or plist) and change nothing")
	noStart := fs.Bool("no-start", false, "install without starting the service")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(e.stderr, "install: unexpected arguments")
		return exitUsage
	}
	fromFlags := v != (installer.ConfigValues{})
	if fromFlags && *copyFrom != "" {
		fmt.Fprintln(e.stderr, "install: give either --config or config values, not both")
		return exitUsage
	}
	o := installer.Options{User: sf.user, Root: sf.root, DataDir: sf.dataDir, Group: *group, Executable: *exe, CopyConfigFrom: *copyFrom}
	p, err := installer.NewPlan(o)
	if err != nil {
		fmt.Fprintf(e.stderr, "install: %v\n", err)
		return exitUsage
	}
	if fromFlags {
		v.DataDir, v.Socket, v.SocketGroup = p.DataDir, p.SocketPath, *group
		if o.Config, err = installer.RenderConfig(v); err != nil {
			fmt.Fprintf(e.stderr, "install: %v\n", err)
			return exitFailure
		}
		if p, err = installer.NewPlan(o); err != nil {
			fmt.Fprintf(e.stderr, "install: %v\n", err)
			return exitUsage
		}
	}
	if *dryRun {
		fmt.Fprint(e.stdout, p.Describe())
		return exitOK
	}
	b, err := serviceBackend(p)
	if err != nil {
		return serviceError(e, "install", err)
	}
	r, err := installer.Apply(e.ctx, p, b)
	printActions(e, r)
	if err != nil {
		return serviceError(e, "install", err)
	}
	if *noStart || p.Root != "" {
		return exitOK
	}
	if r.ServiceChanged && r.State == installer.StateRunning {
		err = installer.Restart(p, b)
		fmt.Fprintln(e.stdout, "restarted service keygen-agent")
	} else {
		err = installer.Start(p, b)
		fmt.Fprintln(e.stdout, "started service keygen-agent")
	}
	if err != nil {
		return serviceError(e, "install", err)
	}
	return exitOK
}

func runUninstall(e *env) int {
	fs := newFlagSet(e, "uninstall", "", "Stop and remove the keygen-agent OS service.",
		"--deactivate asks the running agent to deactivate this machine in Keygen first,\n"+
			"freeing its seat; if that fails nothing is removed. --purge removes the data and\n"+
			"socket directories (the config file is kept). Uninstalling a service that is not\n"+
			"installed succeeds.\n\n"+exitCodesHelp)
	var sf serviceFlags
	sf.add(fs)
	purge := fs.Bool("purge", false, "also remove the data (cache) and socket directories")
	deactivate := fs.Bool("deactivate", false, "deactivate this machine in Keygen first (needs the running agent)")
	socket := fs.String("socket", "", "agent socket `PATH` for --deactivate (default: the installed config's, then KEYGEN_AGENT_SOCKET, then the OS default)")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	p, err := installedPlan(e, sf)
	if err != nil {
		fmt.Fprintf(e.stderr, "uninstall: %v\n", err)
		return exitUsage
	}
	if *deactivate {
		path := *socket
		if path == "" {
			path = e.getenv("KEYGEN_AGENT_SOCKET")
		}
		if path == "" {
			path = p.SocketPath
		}
		if err := deactivateAgent(e.ctx, path); err != nil {
			fmt.Fprintf(e.stderr, "uninstall: deactivate through the agent at %s: %v\n(start it with keygen-agent start, or uninstall without --deactivate and deactivate the machine in Keygen)\n", path, err)
			if ipc.IsCode(err, ipc.CodePermissionDenied) {
				return exitDenied
			}
			return exitUnavailable
		}
		fmt.Fprintln(e.stdout, "deactivated this machine in Keygen")
	}
	b, err := serviceBackend(p)
	if err != nil {
		return serviceError(e, "uninstall", err)
	}
	r, err := installer.Uninstall(e.ctx, p, b, installer.UninstallOptions{Purge: *purge})
	printActions(e, r)
	if err != nil {
		return serviceError(e, "uninstall", err)
	}
	return exitOK
}

// installedPlan builds the plan of what is installed: the default paths,
// corrected by the data_dir and socket the installed config names.
func installedPlan(e *env, sf serviceFlags) (*installer.Plan, error) {
	o := installer.Options{User: sf.user, Root: sf.root, DataDir: sf.dataDir}
	p, err := installer.NewPlan(o)
	if err != nil {
		return nil, err
	}
	var c struct {
		DataDir string `toml:"data_dir"`
		Socket  string `toml:"socket"`
	}
	if data, err := os.ReadFile(p.Path(p.ConfigPath)); err == nil {
		if _, err := toml.Decode(string(data), &c); err == nil {
			changed := false
			if o.DataDir == "" && c.DataDir != "" && c.DataDir != p.DataDir {
				o.DataDir, changed = c.DataDir, true
			}
			if c.Socket != "" && c.Socket != p.SocketPath {
				o.SocketDir, changed = dirOf(c.Socket), true
			}
			if changed {
				return installer.NewPlan(o)
			}
		}
	}
	return p, nil
}

func dirOf(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' || p[i] == '\\' {
			return p[:i]
		}
	}
	return p
}

func printActions(e *env, r *installer.Result) {
	if r == nil {
		return
	}
	for _, a := range r.Actions {
		fmt.Fprintln(e.stdout, a)
	}
}

// serviceError prints err and maps it to an exit code.
func serviceError(e *env, verb string, err error) int {
	fmt.Fprintf(e.stderr, "%s: %v\n", verb, err)
	if errors.Is(err, fs.ErrPermission) {
		fmt.Fprintln(e.stderr, "(run as root or Administrator, or use --user)")
		return exitDenied
	}
	return exitFailure
}
