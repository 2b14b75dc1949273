//go:build !unix

package kafkamux

import (
	"errors"
	"os"
)

var errWouldBlock = errors.New("lock held")

// flockExclusive does nothing where flock does not exist: one process per
// data dir is then the operator's to ensure (docs/operations.md).
func flockExclusive(*os.File) error { return nil }
