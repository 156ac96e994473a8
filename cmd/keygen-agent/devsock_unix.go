//go:build unix

package main

import "path/filepath"

// devSocketPath is the dev agent's socket: inside its temporary directory,
// which keeps the path short enough for macOS' 104-byte limit.
func devSocketPath(dir string) string { return filepath.Join(dir, "agent.sock") }
