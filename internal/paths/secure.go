package paths

import (
	"errors"
	"fmt"
)

// ErrUnsafe is matched (errors.Is) by every [UnsafeError]: a directory the
// agent writes, or one on the way to it, could be changed by another user.
var ErrUnsafe = errors.New("unsafe path")

// UnsafeError says which directory the agent refuses to write and why.
type UnsafeError struct {
	// Dir is the directory the agent was asked to use.
	Dir string
	// Path is the offending path: Dir itself, one of its ancestors or a
	// symbolic link on the way.
	Path string
	// Reason says what is wrong and how to fix it.
	Reason string
}

func (e *UnsafeError) Error() string {
	if e.Path == e.Dir {
		return fmt.Sprintf("refusing to use %s: %s", e.Dir, e.Reason)
	}
	return fmt.Sprintf("refusing to use %s: %s %s", e.Dir, e.Path, e.Reason)
}

// Is makes errors.Is(err, ErrUnsafe) true.
func (e *UnsafeError) Is(target error) bool { return target == ErrUnsafe }
