package cache

import (
	"strconv"
	"testing"
	"time"
)

func BenchmarkPutLease(b *testing.B) {
	s := openT(b, dbPath(b))
	l := LeaseRecord{App: "app", AppVersion: "1.0", PID: 1234, StartTime: 99, Created: t0}
	b.ResetTimer()
	for i := range b.N {
		l.ID = strconv.Itoa(i % 64)
		if err := s.PutLease(l); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkAdvanceWatermark(b *testing.B) {
	s := openT(b, dbPath(b))
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.AdvanceWatermark(t0.Add(time.Duration(i) * time.Millisecond)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
