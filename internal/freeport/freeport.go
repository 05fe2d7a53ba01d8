// Package freeport picks loopback ports for servers that tests and `dfs
// bench` start, stop and start again on the same address.
package freeport

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Free returns n distinct loopback ports nothing listened on a moment
// ago, picked below the kernel's ephemeral range. A port from
// 127.0.0.1:0 goes back to that range when its listener closes, and while
// a server the test stopped is down, any listener on :0 or any outgoing
// connection's source port could take it: the restart would fail with
// "address already in use", or clients would reach another test's server.
// Ports below the range are only ever handed out by picks like this one.
func Free(n int) ([]int, error) {
	low := ephemeralLow()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries == 100*n+100 {
			return nil, errors.New("no free port below the ephemeral range")
		}
		port := 10000 + rand.IntN(low-10000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken: try another
		}
		ls = append(ls, l) // held until all are picked, so they are distinct
		ports = append(ports, port)
	}
	return ports, nil
}

// ephemeralLow returns the first port of the kernel's ephemeral range
// (Linux's default when it cannot be read).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	return low
}
