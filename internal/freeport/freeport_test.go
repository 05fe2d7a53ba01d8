package freeport

import (
	"net"
	"strconv"
	"testing"

	"github.com/matryer/is"
)

func TestFree(t *testing.T) {
	is := is.New(t)
	ports, err := Free(20)
	is.NoErr(err)
	is.Equal(len(ports), 20) // as many as asked
	seen := map[int]bool{}
	for _, p := range ports {
		is.True(!seen[p])                         // distinct
		is.True(p >= 10000 && p < ephemeralLow()) // below the ephemeral range
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		is.NoErr(err) // and free
		l.Close()
	}
}
