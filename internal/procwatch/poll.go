package procwatch

import (
	"context"
	"time"
)

// pollExit closes ch once pid (started at startTime) is gone, checking every
// interval: the fallback wherever the OS's exit notification is unavailable.
// When ctx is done it stops and ch is never closed.
func pollExit(ctx context.Context, pid int, startTime uint64, every time.Duration, ch chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if !Alive(pid, startTime) {
			close(ch)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
