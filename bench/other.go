//go:build !unix

package main

import (
	"fmt"
	"os"
)

// The benchmarks use Unix sockets, signals and getrusage; on Windows run
// them under WSL.
func main() {
	fmt.Fprintln(os.Stderr, "bench: Unix only (Unix sockets, signals, getrusage)")
	os.Exit(2)
}
