//go:build !race

package kafkamux

const raceEnabled = false
