package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/keygen-agent/keygen-agent/ipc"
)

func init() {
	register(verb{name: "debug", summary: "talk to the agent's socket directly (call, peer)", run: runDebug})
}

const debugHelp = `subcommands:
  call METHOD [JSON]   send one request and print the raw result (JSON params, default none)
  peer                 print what the agent sees of this process (PID, user, admin)

examples:
  keygen-agent debug call license.status
  keygen-agent debug call lease.acquire '{"app":"demo"}'
  keygen-agent debug peer

` + exitCodesHelp

func runDebug(e *env) int {
	fs := newFlagSet(e, "debug", "call METHOD [JSON] | peer", "Send raw protocol requests to the agent (see docs/protocol.md).", debugHelp)
	socket := socketFlag(fs, e)
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	switch fs.Arg(0) {
	case "call":
		if fs.NArg() < 2 || fs.NArg() > 3 {
			fmt.Fprintln(e.stderr, "usage: keygen-agent debug call METHOD [JSON]")
			return exitUsage
		}
		var params any
		if fs.NArg() == 3 {
			raw := json.RawMessage(fs.Arg(2))
			if !json.Valid(raw) {
				fmt.Fprintf(e.stderr, "keygen-agent: params are not valid JSON: %s\n", fs.Arg(2))
				return exitUsage
			}
			params = raw
		}
		return debugCall(e, *socket, fs.Arg(1), params)
	case "peer":
		if fs.NArg() != 1 {
			fmt.Fprintln(e.stderr, "usage: keygen-agent debug peer")
			return exitUsage
		}
		return debugPeer(e, *socket)
	case "":
		fs.Usage()
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "keygen-agent: unknown debug subcommand %q (call, peer)\n", fs.Arg(0))
		return exitUsage
	}
}

func debugCall(e *env, socket, method string, params any) int {
	c, code := dialAgent(e, socket)
	if c == nil {
		return code
	}
	defer c.Close()
	var res json.RawMessage
	if err := c.Call(e.ctx, method, params, &res); err != nil {
		var ie *ipc.Error
		if asIPC(err, &ie) {
			b, _ := json.MarshalIndent(map[string]any{"code": ie.Code, "rpc_code": ie.RPCCode, "message": ie.Message, "data": ie.Data}, "", "  ")
			fmt.Fprintf(e.stdout, "%s\n", b)
		}
		return exitForCallError(e, method, err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, res, "", "  "); err != nil {
		out.Reset()
		out.Write(res)
	}
	fmt.Fprintln(e.stdout, strings.TrimRight(out.String(), "\n"))
	return exitOK
}

func debugPeer(e *env, socket string) int {
	c, code := dialAgent(e, socket)
	if c == nil {
		return code
	}
	defer c.Close()
	p, err := c.Peer(e.ctx)
	if err != nil {
		return exitForCallError(e, "agent.peer", err)
	}
	fmt.Fprintf(e.stdout, "pid:        %d\nuid:        %s\n", p.PID, p.UID)
	if p.GID != "" {
		fmt.Fprintf(e.stdout, "gid:        %s\n", p.GID)
	}
	fmt.Fprintf(e.stdout, "admin:      %v\nstart time: %d\n", p.Admin, p.StartTime)
	if p.Exe != "" {
		fmt.Fprintf(e.stdout, "exe:        %s\n", p.Exe)
	}
	return exitOK
}

func asIPC(err error, target **ipc.Error) bool {
	e, ok := err.(*ipc.Error)
	if ok {
		*target = e
	}
	return ok
}
