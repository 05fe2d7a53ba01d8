package roles_test

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// badPager is a coordinator whose chunk map pages do not add up: page
// answers a request for the page from first.
type badPager struct {
	dfspb.UnimplementedCoordinatorServer
	page func(first uint32) (*dfspb.FileInfo, uint32)
}

func (b *badPager) StatFile(ctx context.Context, req *dfspb.StatFileRequest) (*dfspb.StatFileResponse, error) {
	fi, next := b.page(req.FirstChunk)
	return &dfspb.StatFileResponse{File: fi, NextChunk: next}, nil
}

func (b *badPager) DownloadFile(ctx context.Context, req *dfspb.DownloadFileRequest) (*dfspb.DownloadFileResponse, error) {
	fi, next := b.page(req.FirstChunk)
	return &dfspb.DownloadFileResponse{File: fi, NextChunk: next}, nil
}

// TestClientRefusesBadPages: a stat or get whose coordinator returns pages
// that do not add up (no progress, a page of another version, chunks out
// of place) fails with a readable error; it never loops or writes.
func TestClientRefusesBadPages(t *testing.T) {
	t.Parallel()
	sum := sha256.Sum256(nil)
	head := func(version uint64) *dfspb.FileInfo {
		return &dfspb.FileInfo{Path: "/p", Size: 2 * rolestest.ChunkSize, Sha256: sum[:], ChunkSize: rolestest.ChunkSize, Replication: 1,
			Version: version, SessionId: "s", ChunkCount: 2}
	}
	chunk := func(i uint32) *dfspb.ChunkInfo {
		return &dfspb.ChunkInfo{Index: i, ChunkId: "c", Offset: int64(i) * rolestest.ChunkSize, Size: rolestest.ChunkSize, Digest: sum[:], FrameSize: rolestest.FrameSize}
	}
	for name, page := range map[string]func(first uint32) (*dfspb.FileInfo, uint32){
		"no progress": func(first uint32) (*dfspb.FileInfo, uint32) { return head(1), first },
		"another version": func(first uint32) (*dfspb.FileInfo, uint32) {
			fi := head(uint64(first) + 1)
			fi.Chunks = []*dfspb.ChunkInfo{chunk(first)}
			return fi, first + 1
		},
		"chunk out of place": func(first uint32) (*dfspb.FileInfo, uint32) {
			fi := head(1)
			fi.Chunks = []*dfspb.ChunkInfo{chunk(1 - first)}
			return fi, first + 1
		},
		"past the end": func(first uint32) (*dfspb.FileInfo, uint32) {
			fi := head(1)
			fi.Chunks = []*dfspb.ChunkInfo{chunk(first)}
			return fi, 7
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			is := is.New(t)
			cl := clientOf(t, &badPager{page: page}, nil)
			_, err := cl.Stat(t.Context(), "/p")
			is.Equal(rpc.KindOf(err), rpc.Internal)                  // stat fails
			is.True(strings.Contains(err.Error(), "malformed page")) // saying why
			var w strings.Builder
			_, err = cl.Get(t.Context(), "/p", &w, nil)
			is.True(err != nil)  // get fails
			is.Equal(w.Len(), 0) // without writing
		})
	}
}
