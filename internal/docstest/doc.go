// Package docstest holds the test that keeps ARCHITECTURE.md true to the
// code (docs_test.go): every function written in backticks with "()" is
// declared in the module, every repository path it names exists, and every
// package of the module has its line in the package table. It has no code
// of its own.
package docstest
