// Package deptest holds the module's one dependency test (deps_test.go):
// per package, the imports it must never have, direct or transitive, on
// every OS the agent ships for. It has no code of its own.
package deptest
