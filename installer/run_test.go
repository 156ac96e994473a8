package installer

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"
)

func TestRunServiceInteractive(t *testing.T) {
	// Tests never run under a service manager: run is called directly.
	want := errors.New("boom")
	got := RunService(context.Background(), "kga-test", func(ctx context.Context) error { return want }, nil)
	if !errors.Is(got, want) {
		t.Fatalf("got %v", got)
	}
}

func TestProgramStartStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		started := make(chan struct{})
		p := newProgram(context.Background(), func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			time.Sleep(time.Second) // clean shutdown takes a moment
			return ctx.Err()
		}, slog.New(slog.DiscardHandler))
		p.exit = func(int) { t.Error("exit called on a requested stop") }
		if err := p.Start(nil); err != nil {
			t.Fatal(err)
		}
		<-started
		if err := p.Stop(nil); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if err := p.result(); err != nil {
			t.Errorf("result after clean stop: %v", err)
		}
	})
}

func TestProgramStopTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		p := newProgram(context.Background(), func(ctx context.Context) error {
			<-release // ignores cancellation
			return nil
		}, slog.New(slog.DiscardHandler))
		p.Start(nil)
		start := time.Now()
		if err := p.Stop(nil); err == nil {
			t.Error("stop of a stuck run returned nil")
		}
		if d := time.Since(start); d != StopTimeout {
			t.Errorf("stop waited %v, want %v", d, StopTimeout)
		}
		if p.result() == nil {
			t.Error("result of a stuck run is nil")
		}
		close(release)
		synctest.Wait()
	})
}

func TestProgramOwnReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, runErr := range []error{errors.New("cache corrupt"), nil} {
			p := newProgram(context.Background(), func(ctx context.Context) error { return runErr }, slog.New(slog.DiscardHandler))
			exited := -1
			p.exit = func(code int) { exited = code }
			p.Start(nil)
			<-p.exited
			synctest.Wait()
			exitOnOwnReturnCheck(t, exited)
			err := p.result()
			if err == nil || (runErr != nil && !errors.Is(err, runErr)) {
				t.Errorf("run returned %v on its own: result %v", runErr, err)
			}
		}
	})
}
