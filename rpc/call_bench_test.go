package rpc_test

import (
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dfs-project/dfs/internal/pki"
	"github.com/dfs-project/dfs/rpc"
)

// BenchmarkUnaryCall is the floor under every small-file figure: one
// gRPC call with dfs's server and dial options and a handler that does
// nothing (a health check), 16 in flight as `dfs bench` runs its small
// files, in plain text and over dfs's TLS. It reports the CPU the client
// and the server spend on a call together (this process's user and
// system time per call): a 4 KiB get makes two such calls, a 4 KiB put
// three plus its fsyncs, so on two cores they can go no faster than two
// CPU-seconds divided by that many calls' worth.
//
//	go test ./rpc -run - -bench UnaryCall -benchtime 20000x -count 5
func BenchmarkUnaryCall(b *testing.B) {
	for _, secure := range []bool{false, true} {
		name := "plain"
		if secure {
			name = "tls"
		}
		b.Run(name, func(b *testing.B) {
			var server grpc.ServerOption = grpc.EmptyServerOption{}
			var client grpc.DialOption = grpc.EmptyDialOption{}
			if secure {
				sc, cc := benchCreds(b)
				server, client = grpc.Creds(sc), grpc.WithTransportCredentials(cc)
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := grpc.NewServer(append(rpc.ServerOptions(zerolog.Nop()), server)...)
			healthpb.RegisterHealthServer(srv, health.NewServer())
			go srv.Serve(lis)
			defer srv.Stop()
			conn, err := grpc.NewClient(lis.Addr().String(), append(rpc.DialOptions(), client)...)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			hc := healthpb.NewHealthClient(conn)
			if _, err := hc.Check(b.Context(), &healthpb.HealthCheckRequest{}); err != nil {
				b.Fatal(err) // connected (and handshaken) before the clock starts
			}
			b.SetParallelism(8) // 16 callers on 2 cores
			before := cpuTime(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := hc.Check(b.Context(), &healthpb.HealthCheckRequest{}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-before).Microseconds())/float64(b.N), "cpu-µs/call")
		})
	}
}

// benchCreds returns the credentials of a coordinator serving on
// 127.0.0.1 and of a client, from a new CA.
func benchCreds(b *testing.B) (server, client credentials.TransportCredentials) {
	dir := b.TempDir()
	ca := filepath.Join(dir, "ca")
	if err := pki.InitCA(ca, pki.CAOptions{}); err != nil {
		b.Fatal(err)
	}
	load := func(role pki.Role, name string) *pki.TLS {
		cert, key, err := pki.IssueFiles(ca, dir, pki.Request{Role: role, Name: name}, false)
		if err != nil {
			b.Fatal(err)
		}
		t, err := pki.LoadTLS(pki.Files{CA: filepath.Join(ca, pki.CACertFile), Cert: cert, Key: key}, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		return t
	}
	return load(pki.Coordinator, "coordinator").ServerCredentials(), load(pki.Client, "bench").ClientCredentials(pki.Coordinator)
}

// cpuTime is the user and system time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
