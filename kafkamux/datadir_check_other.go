//go:build !unix

package kafkamux

import "os"

// mapFile reads path into memory; release drops it.
func mapFile(path string) (data []byte, release func(), err error) {
	data, err = os.ReadFile(path)
	return data, func() {}, err
}
