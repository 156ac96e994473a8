package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keygen-agent/keygen-agent/ipc"
	"github.com/keygen-agent/keygen-agent/keygen/devserver"
)

func init() {
	register(verb{name: "debug", summary: "talk to the agent's socket directly (call, peer) or inject dev server faults (fault)", run: runDebug})
}

const debugHelp = `subcommands:
  call METHOD [JSON]   send one request and print the raw result (JSON params, default none)
  peer                 print what the agent sees of this process (PID, user, admin)
  fault [--api-url URL --account ID --admin-token TOKEN] set SPEC... | clear | show
                       set, clear or show the faults of a running devserver/dev stack
                       (URL, account and admin token as devserver/dev print them; or
                       KEYGEN_DEV_API_URL, KEYGEN_DEV_ACCOUNT, KEYGEN_DEV_ADMIN_TOKEN).
                       SPEC: refuse, hang, latency=25ms, 5xx=0.3, 429, bad-signature,
                       no-signature, truncate, date-skew=-10m, route=POST /processes

examples:
  keygen-agent debug call license.status
  keygen-agent debug call lease.acquire '{"app":"demo"}'
  keygen-agent debug peer
  keygen-agent debug fault set latency=250ms 5xx=0.2
  keygen-agent debug fault set refuse      # the app's offline path; then: debug fault clear

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
	case "fault":
		return debugFault(e, fs.Args()[1:])
	case "":
		fs.Usage()
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "keygen-agent: unknown debug subcommand %q (call, peer, fault)\n", fs.Arg(0))
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

// debugFault drives the dev server's admin fault route.
func debugFault(e *env, args []string) int {
	fs := flag.NewFlagSet("debug fault", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	apiURL := fs.String("api-url", e.getenv("KEYGEN_DEV_API_URL"), "the dev server's api_url")
	account := fs.String("account", e.getenv("KEYGEN_DEV_ACCOUNT"), "the dev server's account")
	token := fs.String("admin-token", e.getenv("KEYGEN_DEV_ADMIN_TOKEN"), "the dev server's admin_token")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	usage := func() int {
		fmt.Fprintln(e.stderr, "usage: keygen-agent debug fault [--api-url URL --account ID --admin-token TOKEN] set SPEC... | clear | show")
		return exitUsage
	}
	if *apiURL == "" || *account == "" || *token == "" {
		fmt.Fprintln(e.stderr, "keygen-agent: debug fault needs --api-url, --account and --admin-token (or KEYGEN_DEV_API_URL, KEYGEN_DEV_ACCOUNT, KEYGEN_DEV_ADMIN_TOKEN)")
		return exitUsage
	}
	var method string
	var body []byte
	switch fs.Arg(0) {
	case "set":
		if fs.NArg() < 2 {
			return usage()
		}
		specs := fs.Args()[1:]
		if _, err := devserver.ParseFaults(specs); err != nil {
			fmt.Fprintf(e.stderr, "keygen-agent: %v\n", err)
			return exitUsage
		}
		method = http.MethodPut
		body, _ = json.Marshal(map[string]any{"faults": specs})
	case "clear":
		method = http.MethodDelete
	case "show":
		method = http.MethodGet
	default:
		return usage()
	}
	u := strings.TrimRight(*apiURL, "/") + "/v1/accounts/" + url.PathEscape(*account) + devserver.FaultsPath
	req, err := http.NewRequestWithContext(e.ctx, method, u, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent: %v\n", err)
		return exitUsage
	}
	req.Header.Set("Authorization", "Bearer "+*token)
	req.Header.Set("Content-Type", "application/json")
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent: dev server: %v\n", err)
		return exitFailure
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if res.StatusCode != http.StatusOK {
		fmt.Fprintf(e.stderr, "keygen-agent: dev server answered %d: %s\n", res.StatusCode, strings.TrimSpace(string(raw)))
		return exitFailure
	}
	var doc struct {
		Faults []string `json:"faults"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent: dev server: %v\n", err)
		return exitFailure
	}
	if len(doc.Faults) == 0 {
		fmt.Fprintln(e.stdout, "no faults")
	} else {
		fmt.Fprintf(e.stdout, "faults: %s\n", strings.Join(doc.Faults, ", "))
	}
	return exitOK
}
