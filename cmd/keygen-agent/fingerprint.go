package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keygen-agent/keygen-agent/cache"
	"github.com/keygen-agent/keygen-agent/fingerprint"
	"github.com/keygen-agent/keygen-agent/internal/paths"
)

func init() {
	register(verb{name: "fingerprint", summary: "print this machine's fingerprint and hardware components", run: runFingerprint})
}

// defaultAppID is used when neither --app-id, KEYGEN_AGENT_APP_ID,
// KEYGEN_PRODUCT nor KEYGEN_ACCOUNT is set.
const defaultAppID = "keygen-agent"

const fingerprintHelp = `The app ID keys every HMAC, so it must be the one the agent uses: --app-id, else
KEYGEN_AGENT_APP_ID, else KEYGEN_PRODUCT, else KEYGEN_ACCOUNT (the agent's own fallbacks),
else "keygen-agent". An app_id set only in the config file is not read here: pass it.
Explicit identity for containers: KEYGEN_AGENT_MACHINE_ID or --identity-file.
Output never contains a raw serial number, UUID or MAC address: only HMACs.
Run as root/Administrator to see every source (DMI serials are root-only on Linux).

--explain compares with the components recorded at activation, read from
<data-dir>/agent.db; while the agent runs it holds that file, so pass the list with
--recorded FILE (a JSON array of {"name","fingerprint"}) instead.

exit codes:
  0  success
  1  the fingerprint or the recorded components could not be read
  2  bad flags or arguments
  3  no usable machine identity: configure KEYGEN_AGENT_MACHINE_ID or --identity-file`

// fingerprintOutput is the --json document.
type fingerprintOutput struct {
	*fingerprint.Result
	AppIDSource   string                  `json:"app_id_source"`
	RecordedFrom  string                  `json:"recorded_from,omitempty"`
	RecordedError string                  `json:"recorded_error,omitempty"`
	Comparison    *fingerprint.Comparison `json:"comparison,omitempty"`
}

func runFingerprint(e *env) int {
	fs := newFlagSet(e, "fingerprint", "", "Print the machine fingerprint and each hardware component's name, fingerprint and source.", fingerprintHelp)
	asJSON := fs.Bool("json", false, "print one JSON object")
	explain := fs.Bool("explain", false, "compare with the components recorded at activation and say why sources were skipped")
	appID := fs.String("app-id", "", "vendor app ID keying the HMACs (default: see below)")
	defData := paths.System().DataDir
	if v := e.getenv("KEYGEN_AGENT_DATA_DIR"); v != "" {
		defData = v
	}
	dataDir := fs.String("data-dir", defData, "agent data directory holding agent.db (for --explain)")
	recorded := fs.String("recorded", "", "JSON file with the recorded components (for --explain; overrides --data-dir)")
	identityFile := fs.String("identity-file", "", "file holding an explicit machine identity (containers)")
	root := fs.String("root", "", "filesystem root for the Linux collectors (diagnostics and tests)")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "keygen-agent fingerprint: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	id, idSource := resolveAppID(*appID, e.getenv)
	res, err := fingerprint.Compute(e.ctx, fingerprint.Options{AppID: id, IdentityFile: *identityFile, Root: *root, Getenv: e.getenv})
	if err != nil {
		fmt.Fprintf(e.stderr, "keygen-agent fingerprint: %v\n", err)
		if errors.Is(err, fingerprint.ErrNoMachineID) {
			return exitConfig
		}
		return exitFailure
	}
	out := fingerprintOutput{Result: res, AppIDSource: idSource}
	code := exitOK
	if *explain {
		rec, from, err := loadRecorded(e.ctx, *recorded, *dataDir)
		out.RecordedFrom = from
		switch {
		case err != nil:
			out.RecordedError = err.Error()
			code = exitFailure
		case rec != nil:
			cmp := fingerprint.Compare(rec, res.Components)
			out.Comparison = &cmp
		}
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return exitFailure
		}
	} else {
		printFingerprint(e.stdout, out, *explain)
	}
	if out.RecordedError != "" {
		fmt.Fprintf(e.stderr, "keygen-agent fingerprint: recorded components: %s\n", out.RecordedError)
	}
	return code
}

// resolveAppID applies the agent's precedence and says where the value came from.
func resolveAppID(flagValue string, getenv func(string) string) (id, source string) {
	if flagValue != "" {
		return flagValue, "--app-id"
	}
	for _, k := range []string{"KEYGEN_AGENT_APP_ID", "KEYGEN_PRODUCT", "KEYGEN_ACCOUNT"} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v, k
		}
	}
	return defaultAppID, "default"
}

// loadRecorded returns the components recorded at activation: from file if
// given, else from the agent's cache. nil, nil means nothing is recorded
// (not activated, or no cache yet). The cache is never created here.
func loadRecorded(ctx context.Context, file, dataDir string) ([]fingerprint.Component, string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, file, err
		}
		var list []fingerprint.Component
		if err := json.Unmarshal(b, &list); err != nil {
			return nil, file, fmt.Errorf("%s: want a JSON array of {\"name\",\"fingerprint\"}: %v", file, err)
		}
		return list, file, nil
	}
	if dataDir == "" {
		return nil, "", errors.New("no data directory: pass --data-dir or --recorded")
	}
	path := paths.CacheFile(dataDir)
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, path, nil
		}
		return nil, path, fmt.Errorf("%s: %v", path, err)
	}
	st, err := cache.Open(path, cache.Options{LockTimeout: 300 * time.Millisecond})
	if errors.Is(err, cache.ErrLocked) {
		return nil, path, fmt.Errorf("%s is held by the running agent, so it cannot be read now; "+
			"pass the recorded list with --recorded FILE, or stop the agent", path)
	}
	if err != nil {
		return nil, path, err
	}
	defer st.Close()
	m, err := st.Machine()
	if err != nil || m == nil {
		return nil, path, err
	}
	list := make([]fingerprint.Component, 0, len(m.Components))
	for _, c := range m.Components {
		list = append(list, fingerprint.Component{Name: c.Name, Fingerprint: c.Fingerprint, Source: "recorded at activation"})
	}
	return list, path, nil
}

func printFingerprint(w io.Writer, out fingerprintOutput, explain bool) {
	r := out.Result
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "machine fingerprint\t%s\n", r.Fingerprint)
	fmt.Fprintf(tw, "identity\t%s\n", r.IdentitySource)
	fmt.Fprintf(tw, "app id from\t%s\n", out.AppIDSource)
	fmt.Fprintf(tw, "platform\t%s\n", r.Attributes.Platform)
	fmt.Fprintf(tw, "hostname\t%s\n", r.Attributes.Hostname)
	fmt.Fprintf(tw, "cores\t%d\n", r.Attributes.Cores)
	fmt.Fprintf(tw, "memory\t%s\n", formatBytes(r.Attributes.Memory))
	tw.Flush()

	cmp := out.Comparison
	fmt.Fprintf(w, "\ncomponents (%d):\n", len(r.Components))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if cmp != nil {
		fmt.Fprintln(tw, "  NAME\tFINGERPRINT\tSTATUS\tSOURCE")
	} else {
		fmt.Fprintln(tw, "  NAME\tFINGERPRINT\tSOURCE")
	}
	for _, c := range r.Components {
		if cmp != nil {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Name, c.Fingerprint, cmp.Status(c.Name), c.Source)
		} else {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", c.Name, c.Fingerprint, c.Source)
		}
	}
	if cmp != nil {
		for _, n := range cmp.Missing {
			fmt.Fprintf(tw, "  %s\t-\tmissing\trecorded at activation, not found now\n", n)
		}
	}
	tw.Flush()

	if !explain {
		if len(r.Skipped) > 0 {
			fmt.Fprintf(w, "\n%d sources skipped (--explain says why)\n", len(r.Skipped))
		}
		return
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, "\nskipped (%d):\n", len(r.Skipped))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, s := range r.Skipped {
			fmt.Fprintf(tw, "  %s\t%s\n", s.Name, s.Reason)
		}
		tw.Flush()
	}
	switch {
	case cmp != nil:
		fmt.Fprintf(w, "\ncompared with %s: %d of %d current components recorded (%d changed, %d added, %d missing)\n",
			out.RecordedFrom, cmp.MatchedCount, cmp.Supplied, len(cmp.Changed), len(cmp.Added), len(cmp.Missing))
		for _, s := range fingerprint.Strategies {
			verdict := "fails"
			if cmp.Pass[s] {
				verdict = "passes"
			}
			fmt.Fprintf(w, "  componentMatchingStrategy %-10s %s\n", s, verdict)
		}
	case out.RecordedError != "":
		fmt.Fprintf(w, "\nno comparison: %s\n", out.RecordedError)
	default:
		fmt.Fprintf(w, "\nno comparison: no activation recorded in %s\n", out.RecordedFrom)
	}
}

func formatBytes(n int64) string {
	if n <= 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GiB (%d bytes)", float64(n)/(1<<30), n)
}
