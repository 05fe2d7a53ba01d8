package client

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"testing"

	"github.com/matryer/is"
	"google.golang.org/protobuf/proto"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// namespaceCoordinator records the namespace requests it gets and
// answers them with answer's error, or a fixed reply.
type namespaceCoordinator struct {
	dfspb.UnimplementedCoordinatorServer
	answer func(method string) error

	mu   sync.Mutex
	reqs []proto.Message
}

func (c *namespaceCoordinator) record(method string, req proto.Message) error {
	c.mu.Lock()
	c.reqs = append(c.reqs, req)
	c.mu.Unlock()
	if err := c.answer(method); err != nil {
		return rpc.ToStatus(err)
	}
	return nil
}

func (c *namespaceCoordinator) last() proto.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reqs[len(c.reqs)-1]
}

func (c *namespaceCoordinator) DeleteFile(_ context.Context, req *dfspb.DeleteFileRequest) (*dfspb.DeleteFileResponse, error) {
	return &dfspb.DeleteFileResponse{}, c.record("DeleteFile", req)
}

func (c *namespaceCoordinator) Mkdir(_ context.Context, req *dfspb.MkdirRequest) (*dfspb.MkdirResponse, error) {
	return &dfspb.MkdirResponse{}, c.record("Mkdir", req)
}

func (c *namespaceCoordinator) Rename(_ context.Context, req *dfspb.RenameRequest) (*dfspb.RenameResponse, error) {
	return &dfspb.RenameResponse{}, c.record("Rename", req)
}

func (c *namespaceCoordinator) CopyFile(_ context.Context, req *dfspb.CopyFileRequest) (*dfspb.CopyFileResponse, error) {
	return &dfspb.CopyFileResponse{File: &dfspb.FileInfo{Path: req.Dst, Size: 5, Version: 7, ModifiedUnixMs: 1000}}, c.record("CopyFile", req)
}

func (c *namespaceCoordinator) Usage(_ context.Context, req *dfspb.UsageRequest) (*dfspb.UsageResponse, error) {
	return &dfspb.UsageResponse{Bytes: 10, Files: 2, Dirs: 1}, c.record("Usage", req)
}

func (c *namespaceCoordinator) StatFile(_ context.Context, req *dfspb.StatFileRequest) (*dfspb.StatFileResponse, error) {
	if err := c.record("StatFile", req); err != nil {
		return nil, err
	}
	return &dfspb.StatFileResponse{File: &dfspb.FileInfo{Path: req.Path, IsDir: true, ModifiedUnixMs: 2000}}, nil
}

// TestNamespaceRequests: each namespace call sends the request its
// options say, and returns the reply converted.
func TestNamespaceRequests(t *testing.T) {
	is := is.New(t)
	fake := &namespaceCoordinator{answer: func(string) error { return nil }}
	cfg := DefaultConfig()
	cfg.Coordinators = []string{serveCoordinator(t, fake)}
	cl := newClient(t, cfg)
	ctx := t.Context()
	eq := func(want proto.Message) {
		t.Helper()
		if !proto.Equal(fake.last(), want) {
			t.Errorf("sent %v, want %v", fake.last(), want)
		}
	}
	is.NoErr(cl.Remove(ctx, "/a"))
	eq(&dfspb.DeleteFileRequest{Path: "/a"})
	is.NoErr(cl.RemoveAll(ctx, "/a"))
	eq(&dfspb.DeleteFileRequest{Path: "/a", Recursive: true})
	is.NoErr(cl.Mkdir(ctx, "/d"))
	eq(&dfspb.MkdirRequest{Path: "/d"})
	is.NoErr(cl.MkdirAll(ctx, "/d/e"))
	eq(&dfspb.MkdirRequest{Path: "/d/e", Parents: true})
	is.NoErr(cl.Rename(ctx, "/a", "/b", nil))
	eq(&dfspb.RenameRequest{Src: "/a", Dst: "/b"})
	is.NoErr(cl.Rename(ctx, "/a", "/b", &RenameOptions{NoReplace: true}))
	eq(&dfspb.RenameRequest{Src: "/a", Dst: "/b", NoReplace: true})
	fi, err := cl.Copy(ctx, "/a", "/c", &CopyOptions{IfNotExist: true, IfVersion: 3})
	is.NoErr(err)
	eq(&dfspb.CopyFileRequest{Src: "/a", Dst: "/c", IfNotExist: true, IfVersion: 3})
	is.Equal(fi.Path, "/c")         // the new file
	is.Equal(fi.Version, uint64(7)) // its version
	is.Equal(fi.Modified.UnixMilli(), int64(1000))
	u, err := cl.Usage(ctx, "/")
	is.NoErr(err)
	eq(&dfspb.UsageRequest{Path: "/"})
	is.Equal(u, Usage{Bytes: 10, Files: 2, Dirs: 1}) // the sums
	st, err := cl.Stat(ctx, "/d")
	is.NoErr(err)
	is.True(st.IsDir)                              // a directory's stat
	is.Equal(st.Modified.UnixMilli(), int64(2000)) // with its time
}

// TestNamespaceErrors: the kinds the coordinator returns match io/fs's
// sentinels through the SDK's wrapping, which names the operation, the
// path and the request ID; RemoveAll of a missing path is no error.
func TestNamespaceErrors(t *testing.T) {
	is := is.New(t)
	var kind rpc.Kind
	fake := &namespaceCoordinator{answer: func(m string) error { return rpc.Errorf(kind, "%s refused", m) }}
	cfg := DefaultConfig()
	cfg.Coordinators = []string{serveCoordinator(t, fake)}
	cl := newClient(t, cfg)
	ctx := rpc.WithRequestID(t.Context(), "rid-42")
	calls := map[string]func() error{
		"rm /a":       func() error { return cl.Remove(ctx, "/a") },
		"mkdir /d":    func() error { return cl.Mkdir(ctx, "/d") },
		"mkdir -p /d": func() error { return cl.MkdirAll(ctx, "/d") },
		"mv /a /b":    func() error { return cl.Rename(ctx, "/a", "/b", nil) },
		"cp /a /b":    func() error { _, err := cl.Copy(ctx, "/a", "/b", nil); return err },
		"du /":        func() error { _, err := cl.Usage(ctx, "/"); return err },
		"rm -r /a":    func() error { return cl.RemoveAll(ctx, "/a") },
		"stat /a":     func() error { _, err := cl.Stat(ctx, "/a"); return err },
	}
	for _, tc := range []struct {
		kind rpc.Kind
		is   error
	}{{rpc.Permission, fs.ErrPermission}, {rpc.Exists, fs.ErrExist}, {rpc.NotFound, fs.ErrNotExist}, {rpc.Invalid, fs.ErrInvalid}} {
		kind = tc.kind
		for what, call := range calls {
			err := call()
			if tc.kind == rpc.NotFound && what == "rm -r /a" {
				is.NoErr(err) // RemoveAll of nothing
				continue
			}
			is.True(errors.Is(err, tc.is))                                      // the matching sentinel
			is.True(strings.HasPrefix(err.Error(), what+" (request rid-42): ")) // op, path and request ID
		}
	}
	kind = rpc.NotEmpty
	err := cl.Remove(ctx, "/d")
	is.Equal(rpc.KindOf(err), rpc.NotEmpty) // a directory not empty
}
