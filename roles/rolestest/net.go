package rolestest

import (
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/dfs-project/dfs/internal/freeport"
)

// FreeAddr returns a loopback address with a port nothing listens on,
// for a server the test starts, kills and starts again on the same
// address (see freeport.Free for why it is not from 127.0.0.1:0).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ports, err := freeport.Free(1)
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
}

// SilentListener returns the address of a listener that accepts
// connections and never says anything: a coordinator that hangs.
func SilentListener(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}
