package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
)

// Admin verbs: each is one IPC call to the running agent, which decides from
// the caller's peer credentials whether it may.

func init() {
	register(verb{name: "activate", summary: "activate this machine with a license key (admin)", run: runActivate})
	register(verb{name: "deactivate", summary: "deactivate this machine, freeing its seat in Keygen (admin)", run: runDeactivate})
	register(verb{name: "import", summary: "import a machine or license file for air-gapped activation (admin)", run: runImport})
	register(verb{name: "checkout", summary: "force a fresh machine file check-out (admin)", run: runCheckout})
	register(verb{name: "leases", summary: "list the leases the agent holds (admin)", run: runLeases})
	register(verb{name: "release", summary: "force-release a lease (admin)", run: runRelease})
}

const adminHelp = `exit codes:
  0  done
  1  the agent or Keygen refused (message on stderr)
  2  bad flags or arguments
  4  the agent is not reachable
  5  permission denied (run as root/Administrator or a member of the agent's admin group), or not licensed`

// adminCall dials the agent, calls method and prints the result.
func adminCall(e *env, socket, method string, params any, asJSON bool, print func(json.RawMessage)) int {
	c, code := dialAgent(e, socket)
	if c == nil {
		return code
	}
	defer c.Close()
	var res json.RawMessage
	if err := c.Call(e.ctx, method, params, &res); err != nil {
		// A dropped connection is 4 (unreachable), refusals 5, others 1.
		return exitForCallError(e, method, err)
	}
	if asJSON || print == nil {
		_, _ = e.stdout.Write(append(res, '\n'))
		return exitOK
	}
	print(res)
	return exitOK
}

func printStatusJSON(e *env) func(json.RawMessage) {
	return func(raw json.RawMessage) {
		var st ipc.Status
		if json.Unmarshal(raw, &st) == nil {
			printStatus(e.stdout, &st)
		}
	}
}

func runActivate(e *env) int {
	fs, socket, asJSON := adminFlags(e, "activate", "KEY", "Activate this machine with a license key. The key may also come from KEYGEN_LICENSE_KEY\nor from stdin with KEY '-' (keeps it out of the shell history). Under a policy with Keygen's default\nauthenticationStrategy TOKEN, also give a license token (--token, or KEYGEN_LICENSE_TOKEN; --token - reads it\nfrom stdin). The agent keeps both in its cache (mode 0600) and never logs them.", "print the resulting status as JSON")
	token := fs.String("token", "", "license token for policies requiring token authentication (default KEYGEN_LICENSE_TOKEN)")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	key := fs.Arg(0)
	if key == "-" {
		// One Read may return a partial line (pipes); read it all.
		b, _ := io.ReadAll(io.LimitReader(e.stdin, 64<<10))
		key = strings.TrimSpace(string(b))
	}
	if key == "" {
		key = e.getenv("KEYGEN_LICENSE_KEY")
	}
	if key == "" || fs.NArg() > 1 || (key == "-" && *token == "-") {
		fs.Usage()
		return exitUsage
	}
	tok := *token
	if tok == "-" {
		b, _ := io.ReadAll(io.LimitReader(e.stdin, 64<<10))
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		tok = e.getenv("KEYGEN_LICENSE_TOKEN")
	}
	return adminCall(e, *socket, ipc.MethodActivate, ipc.ActivateParams{Key: key, Token: tok}, *asJSON, printStatusJSON(e))
}

func runDeactivate(e *env) int {
	fs, socket, asJSON := adminFlags(e, "deactivate", "", "Deactivate this machine in Keygen: its leases end and its seat is freed. When Keygen\ncannot be reached nothing changes, unless --offline is given: then this machine's license is dropped at once\nand the deactivation is sent to Keygen when it is reachable again.", "print the resulting status as JSON")
	off := fs.Bool("offline", false, "when Keygen is unreachable, deactivate locally now and queue the deactivation")
	force := fs.Bool("force", false, "same as --offline")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	return adminCall(e, *socket, ipc.MethodDeactivate, ipc.DeactivateParams{Offline: *off || *force}, *asJSON, printStatusJSON(e))
}

func runImport(e *env) int {
	fs, socket, asJSON := adminFlags(e, "import", "FILE", "Import a machine file (.lic) checked out elsewhere, for air-gapped machines. The agent\nverifies it and refuses files for other machines. Dropping the file into the import folder works too.", "print the resulting status as JSON")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent: %v\n", err)
		return exitUsage
	}
	return adminCall(e, *socket, ipc.MethodImport, ipc.ImportParams{Certificate: string(data)}, *asJSON, printStatusJSON(e))
}

func runCheckout(e *env) int {
	fs, socket, asJSON := adminFlags(e, "checkout", "", "Validate now and check out a fresh machine file.", "print the resulting status as JSON")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	return adminCall(e, *socket, ipc.MethodCheckout, nil, *asJSON, printStatusJSON(e))
}

func runLeases(e *env) int {
	fs, socket, asJSON := adminFlags(e, "leases", "", "List who holds what: lease, PID, app, user, since, Keygen process, online/offline, next ping.", "print the leases.list result as JSON")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	return adminCall(e, *socket, ipc.MethodLeasesList, nil, *asJSON, func(raw json.RawMessage) {
		var res ipc.LeasesListResult
		if err := json.Unmarshal(raw, &res); err != nil {
			fmt.Fprintln(e.stderr, "keygen-agent: unexpected answer:", err)
			return
		}
		tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "LEASE\tPID\tAPP\tUSER\tSINCE\tKEYGEN PROCESS\tMODE\tNEXT PING")
		for _, l := range res.Leases {
			mode := "online"
			if l.Offline {
				mode = "offline"
			}
			next := "-"
			if l.NextPing != nil {
				next = time.Until(*l.NextPing).Round(time.Second).String()
			}
			app := l.App
			if l.AppVersion != "" {
				app += " " + l.AppVersion
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", l.LeaseID, l.PID, nonEmptyStr(app, "-"), l.User,
				l.Since.Local().Format(time.DateTime), nonEmptyStr(l.ProcessID, "(queued)"), mode, next)
		}
		_ = tw.Flush()
	})
}

func runRelease(e *env) int {
	fs := newFlagSet(e, "release", "LEASE", "Force-release a lease: its Keygen process is killed and the app is notified.", adminHelp)
	socket := socketFlag(fs, e)
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	return adminCall(e, *socket, ipc.MethodLeasesRelease, ipc.ReleaseParams{LeaseID: fs.Arg(0)}, false, func(json.RawMessage) {
		fmt.Fprintf(e.stdout, "released %s\n", fs.Arg(0))
	})
}

// adminFlags declares what every admin verb takes: --socket and --json.
func adminFlags(e *env, name, argsUsage, summary, jsonUsage string) (fs *flag.FlagSet, socket *string, asJSON *bool) {
	fs = newFlagSet(e, name, argsUsage, summary, adminHelp)
	return fs, socketFlag(fs, e), fs.Bool("json", false, jsonUsage)
}
