package installer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// winServiceConfig is what `install` sets on the Windows service, in the
// form the SCM reports it back, so a re-run can compare and update it.
type winServiceConfig struct {
	BinaryPath       string // BinaryPathName: quoted executable and arguments
	DisplayName      string
	Description      string
	StartType        uint32 // SERVICE_AUTO_START (2)
	DelayedAutoStart bool
	// Env is the service key's Environment value (KEY=VALUE, sorted).
	Env []string
	// RestartDelay and ResetPeriod are the single recovery action
	// (SC_ACTION_RESTART) and the failure count's reset period (seconds).
	RestartDelay time.Duration
	ResetPeriod  uint32
	// NonCrashFailures is FailureActionsOnNonCrashFailures: it must stay
	// false so a service stopped with a service-specific exit code (a bad
	// configuration) is not restarted.
	NonCrashFailures bool
}

const winStartAutomatic = 2 // SERVICE_AUTO_START

// wantWinService is the service configuration plan p asks for.
func wantWinService(p *Plan) winServiceConfig {
	args := make([]string, 0, 1+len(p.Service.Arguments))
	args = append(args, winEscapeArg(p.Service.Executable))
	for _, a := range p.Service.Arguments {
		args = append(args, winEscapeArg(a))
	}
	env := envLines(p.Service.EnvVars, func(k, v string) string { return k + "=" + v })
	delay, _ := time.ParseDuration(fmt.Sprint(p.Service.Option["OnFailureDelayDuration"]))
	reset, _ := p.Service.Option["OnFailureResetPeriod"].(int)
	return winServiceConfig{
		BinaryPath:   strings.Join(args, " "),
		DisplayName:  p.Service.DisplayName,
		Description:  p.Service.Description,
		StartType:    winStartAutomatic,
		Env:          env,
		RestartDelay: delay,
		ResetPeriod:  uint32(reset),
	}
}

// diff lists the settings of have that differ from want, one line each.
func (want winServiceConfig) diff(have winServiceConfig) []string {
	var d []string
	add := func(name string, h, w any) { d = append(d, fmt.Sprintf("%s: %v -> %v", name, h, w)) }
	if !strings.EqualFold(have.BinaryPath, want.BinaryPath) {
		add("command line", have.BinaryPath, want.BinaryPath)
	}
	if have.DisplayName != want.DisplayName {
		add("display name", have.DisplayName, want.DisplayName)
	}
	if have.Description != want.Description {
		add("description", have.Description, want.Description)
	}
	if have.StartType != want.StartType || have.DelayedAutoStart != want.DelayedAutoStart {
		add("start type", startName(have), startName(want))
	}
	h, w := slices.Clone(have.Env), slices.Clone(want.Env)
	slices.Sort(h)
	slices.Sort(w)
	if !slices.Equal(h, w) {
		// Values may hold secrets: name the variables only.
		add("environment", envNames(h), envNames(w))
	}
	if have.RestartDelay != want.RestartDelay || have.ResetPeriod != want.ResetPeriod {
		add("recovery", fmt.Sprintf("restart after %v, reset %ds", have.RestartDelay, have.ResetPeriod),
			fmt.Sprintf("restart after %v, reset %ds", want.RestartDelay, want.ResetPeriod))
	}
	if have.NonCrashFailures != want.NonCrashFailures {
		add("recovery on non-crash failures", have.NonCrashFailures, want.NonCrashFailures)
	}
	return d
}

func startName(c winServiceConfig) string {
	s := map[uint32]string{2: "automatic", 3: "manual", 4: "disabled"}[c.StartType]
	if s == "" {
		s = fmt.Sprint(c.StartType)
	}
	if c.DelayedAutoStart {
		s += " (delayed)"
	}
	return s
}

func envNames(env []string) string {
	names := make([]string, 0, len(env))
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		names = append(names, k)
	}
	return "[" + strings.Join(names, " ") + "]"
}

// winEscapeArg quotes one argument of a Windows command line so that
// CommandLineToArgvW (and the Go runtime) reads it back unchanged: quotes
// are needed around spaces, tabs and quotes; a quote is preceded by a
// backslash, and backslashes are doubled only where they precede a quote
// (including the closing one).
func winEscapeArg(s string) string {
	if s == "" {
		return `""`
	}
	if !strings.ContainsAny(s, " \t\"") {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	slashes := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\\':
			slashes++
		case '"':
			b.WriteString(strings.Repeat(`\`, slashes+1))
			slashes = 0
		default:
			slashes = 0
		}
		b.WriteByte(c)
	}
	b.WriteString(strings.Repeat(`\`, slashes))
	b.WriteByte('"')
	return b.String()
}

// svcState is the part of a service's status the stop wait looks at.
type svcState struct {
	Stopped bool
	Pending bool // STOP_PENDING
	PID     uint32
}

// ErrStopTimeout is returned when a service did not stop by the deadline.
var ErrStopTimeout = errors.New("the service did not stop in time")

// waitStopped polls query every interval until the service reports
// stopped, an error, or the deadline passes (ErrStopTimeout, naming the
// state and process it was left in). kardianos' own wait loop never ends
// for a service stuck in STOP_PENDING: its "break" leaves only the select.
func waitStopped(ctx context.Context, query func() (svcState, error), interval, deadline time.Duration) error {
	t := time.NewTimer(deadline)
	defer t.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		st, err := query()
		if err != nil {
			return fmt.Errorf("query service status: %w", err)
		}
		if st.Stopped {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			what := "still running"
			if st.Pending {
				what = "stuck in STOP_PENDING"
			}
			return fmt.Errorf("%w: %s after %v (process %d); end it with `taskkill /F /PID %d` if it does not stop",
				ErrStopTimeout, what, deadline, st.PID, st.PID)
		}
	}
}
