//go:build !race

package s3gw_test

// raceEnabled reports whether the tests run with the race detector.
const raceEnabled = false
