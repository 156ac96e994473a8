package main

import (
	"os"
	"strconv"
)

// devSocketPath is the dev agent's named pipe, unique per dev process.
func devSocketPath(string) string {
	return `\\.\pipe\keygen-agent-dev-` + strconv.Itoa(os.Getpid())
}
