//go:build unix

package ipc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// The benchmarks compare a no-op JSON-RPC round trip through Server and
// Client with a raw Unix-socket echo of the same request line (the floor).
//
//	go test -run XXX -bench . -benchtime 2s ./ipc/

var benchLine = []byte(`{"jsonrpc":"2.0","id":1,"method":"bench.noop"}` + "\n")

func benchServer(b *testing.B) string {
	mux := NewMux()
	mux.Register("bench.noop", PermAny, func(context.Context, json.RawMessage) (any, error) { return struct{}{}, nil })
	_, path := testServer(b, ServerConfig{Mux: mux, MaxConns: 4096})
	return path
}

func echoServer(b *testing.B) string {
	ln, path := testListen(b)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if _, err := c.Write(line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return path
}

type roundTripper func() error

func rpcClients(b *testing.B, path string, n int) []roundTripper {
	out := make([]roundTripper, n)
	for i := range out {
		c := testDial(b, path)
		out[i] = func() error { return c.Call(context.Background(), "bench.noop", nil, nil) }
	}
	return out
}

func echoClients(b *testing.B, path string, n int) []roundTripper {
	out := make([]roundTripper, n)
	for i := range out {
		c, err := net.Dial("unix", path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		br := bufio.NewReader(c)
		out[i] = func() error {
			if _, err := c.Write(benchLine); err != nil {
				return err
			}
			_, err := br.ReadSlice('\n')
			return err
		}
	}
	return out
}

func latency(b *testing.B, rt roundTripper) {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := rt(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

func throughput(b *testing.B, rts []roundTripper) {
	var wg sync.WaitGroup
	per := (b.N + len(rts) - 1) / len(rts)
	b.ResetTimer()
	t0 := time.Now()
	for _, rt := range rts {
		wg.Go(func() {
			for range per {
				if err := rt(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(per*len(rts))/time.Since(t0).Seconds(), "calls/s")
}

func BenchmarkRoundTrip(b *testing.B) {
	b.Run("rpc", func(b *testing.B) { latency(b, rpcClients(b, benchServer(b), 1)[0]) })
	b.Run("raw-echo", func(b *testing.B) { latency(b, echoClients(b, echoServer(b), 1)[0]) })
}

func BenchmarkThroughput(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("rpc/clients=%d", n), func(b *testing.B) { throughput(b, rpcClients(b, benchServer(b), n)) })
		b.Run(fmt.Sprintf("raw-echo/clients=%d", n), func(b *testing.B) { throughput(b, echoClients(b, echoServer(b), n)) })
	}
}
