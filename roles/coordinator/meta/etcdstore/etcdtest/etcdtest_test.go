package etcdtest

import (
	"context"
	"testing"
	"time"

	"github.com/matryer/is"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func client(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestStart(t *testing.T) {
	is := is.New(t)
	eps := Start(t)
	is.Equal(len(eps), 1)
	cli := client(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := cli.Put(ctx, "k", "v")
	is.NoErr(err) // the server takes writes
	resp, err := cli.Get(ctx, "k")
	is.NoErr(err)
	is.Equal(string(resp.Kvs[0].Value), "v") // and reads them back
}

func TestClusterSurvivesAMember(t *testing.T) {
	is := is.New(t)
	c := StartCluster(t, 3)
	is.Equal(len(c.Endpoints()), 3)
	cli := client(t, c.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := cli.Put(ctx, "k", "1")
	is.NoErr(err)
	c.Stop(0)
	c.Stop(0) // a second stop does nothing
	_, err = cli.Put(ctx, "k", "2")
	is.NoErr(err) // two of three members still make a quorum
	resp, err := cli.Get(ctx, "k")
	is.NoErr(err)
	is.Equal(string(resp.Kvs[0].Value), "2")
}
