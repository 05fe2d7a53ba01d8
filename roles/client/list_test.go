package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// listCoordinator answers ListFiles from a fixed listing, a page of the
// requested size at a time (the page token is the index of the next
// entry), and calls before (if set) with the index of each page before
// answering it; an error from before is the answer.
type listCoordinator struct {
	dfspb.UnimplementedCoordinatorServer
	entries []*dfspb.ListEntry
	before  func(page int, req *dfspb.ListFilesRequest) error

	mu       sync.Mutex
	requests int // ListFiles calls so far
}

func (c *listCoordinator) ListFiles(_ context.Context, req *dfspb.ListFilesRequest) (*dfspb.ListFilesResponse, error) {
	c.mu.Lock()
	page := c.requests
	c.requests++
	c.mu.Unlock()
	if c.before != nil {
		if err := c.before(page, req); err != nil {
			return nil, rpc.ToStatus(err)
		}
	}
	from := 0
	if req.PageToken != "" {
		var err error
		if from, err = strconv.Atoi(req.PageToken); err != nil || from < 0 || from > len(c.entries) {
			return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "invalid page token"))
		}
	}
	size := int(req.PageSize)
	if size == 0 {
		size = 1000
	}
	to := min(from+size, len(c.entries))
	resp := &dfspb.ListFilesResponse{Entries: c.entries[from:to]}
	if to < len(c.entries) {
		resp.NextPageToken = strconv.Itoa(to)
	}
	return resp, nil
}

func (c *listCoordinator) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests
}

// startListCoordinator serves c on 127.0.0.1 and returns a client of it
// that reads listings in pages of pageSize.
func startListCoordinator(t *testing.T, c *listCoordinator, pageSize int) *Client {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Coordinators = []string{serveCoordinator(t, c)}
	cfg.ListPageSize = pageSize
	return newClient(t, cfg)
}

// someEntries returns n files /l/f0000... in order, then a directory
// /l/z.
func someEntries(n int) []*dfspb.ListEntry {
	var out []*dfspb.ListEntry
	for i := range n {
		out = append(out, &dfspb.ListEntry{Path: fmt.Sprintf("/l/f%04d", i), Size: int64(i), Chunks: 1, Replication: 3, ModifiedUnixMs: int64(i) * 1000})
	}
	return append(out, &dfspb.ListEntry{Path: "/l/z", IsDir: true})
}

// TestListPagesHoldsOnePage: ListPages hands each page to its callback
// and asks for the next only when the callback has returned, so the
// client holds one page at a time: when any page is requested, every
// entry served before has been consumed. The pages are the listing, in
// order, converted to Entry.
func TestListPagesHoldsOnePage(t *testing.T) {
	is := is.New(t)
	const n, size = 24, 5 // 25 entries: 5 pages
	var mu sync.Mutex
	served, consumed := 0, 0
	fc := &listCoordinator{entries: someEntries(n)}
	fc.before = func(page int, req *dfspb.ListFilesRequest) error {
		mu.Lock()
		defer mu.Unlock()
		if served != consumed || req.PageSize != size {
			return rpc.Errorf(rpc.Internal, "page %d requested (size %d) with %d entries served and %d consumed", page, req.PageSize, served, consumed)
		}
		served += min(size, len(fc.entries)-served)
		return nil
	}
	cl := startListCoordinator(t, fc, size)

	var got []DirEntry
	pages := 0
	err := cl.ListPages(t.Context(), "/l", false, func(page []DirEntry) error {
		mu.Lock()
		defer mu.Unlock()
		pages++
		if len(page) > size || served-consumed != len(page) {
			return fmt.Errorf("page of %d entries with %d served and %d consumed", len(page), served, consumed)
		}
		consumed += len(page)
		got = append(got, page...)
		return nil
	})
	is.NoErr(err)                                                                                                          // listed, and every page asked for with the one before consumed
	is.Equal(pages, 5)                                                                                                     // in pages of 5
	is.Equal(fc.calls(), 5)                                                                                                // one call each
	is.Equal(len(got), n+1)                                                                                                // every entry
	is.Equal(got[7], DirEntry{Path: "/l/f0007", Size: 7, Chunks: 1, Replication: 3, Modified: time.UnixMilli(7000).UTC()}) // a file converted
	is.Equal(got[n], DirEntry{Path: "/l/z", IsDir: true, Mode: fs.ModeDir})                                                // a directory, no file fields
	for i := range n {
		is.Equal(got[i].Path, fmt.Sprintf("/l/f%04d", i)) // in order
	}

	var all []DirEntry
	for e, err := range cl.List(t.Context(), "/l", nil) {
		is.NoErr(err) // the iterator
		all = append(all, e)
	}
	is.Equal(all, got) // lists the same
}

// TestListPagesCallbackError: an error from the callback stops the
// listing at once and comes back as it is.
func TestListPagesCallbackError(t *testing.T) {
	is := is.New(t)
	fc := &listCoordinator{entries: someEntries(20)}
	cl := startListCoordinator(t, fc, 4)
	stop := errors.New("enough")
	err := cl.ListPages(t.Context(), "/l", true, func([]DirEntry) error { return stop })
	is.Equal(err, stop)     // the callback's error
	is.Equal(fc.calls(), 1) // no page after it
}

// TestEntries: the iterator yields the listing entry by entry, reading a
// page only when the one before is used up; breaking out stops the
// listing; an error ends it as the last pair.
func TestEntries(t *testing.T) {
	t.Run("all", func(t *testing.T) {
		is := is.New(t)
		var mu sync.Mutex
		yielded := 0
		fc := &listCoordinator{entries: someEntries(9)} // 10 entries: pages of 3, 3, 3, 1
		fc.before = func(page int, _ *dfspb.ListFilesRequest) error {
			mu.Lock()
			defer mu.Unlock()
			if yielded != 3*page {
				return rpc.Errorf(rpc.Internal, "page %d requested after %d entries", page, yielded)
			}
			return nil
		}
		cl := startListCoordinator(t, fc, 3)
		var paths []string
		for e, err := range cl.List(t.Context(), "/l", nil) {
			is.NoErr(err) // each entry, and each page asked for when the one before was used up
			mu.Lock()
			yielded++
			mu.Unlock()
			paths = append(paths, e.Path)
		}
		is.Equal(len(paths), 10)   // every entry
		is.Equal(paths[9], "/l/z") // the last
		is.Equal(fc.calls(), 4)    // in four pages
	})
	t.Run("break", func(t *testing.T) {
		is := is.New(t)
		fc := &listCoordinator{entries: someEntries(20)}
		cl := startListCoordinator(t, fc, 3)
		n := 0
		for _, err := range cl.List(t.Context(), "/l", nil) {
			is.NoErr(err) // an entry
			if n++; n == 4 {
				break
			}
		}
		is.Equal(fc.calls(), 2) // the listing stopped with the page it was in
	})
	t.Run("error", func(t *testing.T) {
		is := is.New(t)
		fc := &listCoordinator{entries: someEntries(20)}
		fc.before = func(page int, _ *dfspb.ListFilesRequest) error {
			if page == 2 {
				return rpc.Errorf(rpc.NotFound, "gone")
			}
			return nil
		}
		cl := startListCoordinator(t, fc, 3)
		n, errs := 0, 0
		for e, err := range cl.List(t.Context(), "/l", nil) {
			if err != nil {
				errs++
				is.True(errors.Is(err, rpc.NotFound)) // the coordinator's error, with its kind
				is.Equal(e, DirEntry{})               // and no entry
				continue
			}
			is.Equal(errs, 0) // no entry after the error
			n++
		}
		is.Equal(n, 6)    // the two pages before the error
		is.Equal(errs, 1) // then the error, once
	})
}

// TestListPagesRefusesBrokenPages: a reply that is not a page of a
// listing fails with Internal, before the callback sees it, instead of
// making the listing loop, repeat itself or hold more than a page.
func TestListPagesRefusesBrokenPages(t *testing.T) {
	f := func(p string) *dfspb.ListEntry { return &dfspb.ListEntry{Path: p} }
	d := func(p string) *dfspb.ListEntry { return &dfspb.ListEntry{Path: p, IsDir: true} }
	many := make([]*dfspb.ListEntry, maxListPage+1)
	for i := range many {
		many[i] = f(fmt.Sprintf("/m/%06d", i))
	}
	for _, tc := range []struct {
		name  string
		pages [][]*dfspb.ListEntry // each page but the last promises more
		seen  int                  // entries the callback sees before the failure
	}{
		{"out of order", [][]*dfspb.ListEntry{{f("/b"), f("/a")}}, 0},
		{"repeated on the next page", [][]*dfspb.ListEntry{{f("/a"), f("/b")}, {f("/b"), f("/c")}}, 2},
		{"a directory before a file it sorts after", [][]*dfspb.ListEntry{{d("/a"), f("/a-b")}}, 0},
		{"an empty page promising more", [][]*dfspb.ListEntry{{f("/a")}, {}, {f("/b")}}, 1},
		{"an invalid path", [][]*dfspb.ListEntry{{f("/a"), f("/b/../c")}}, 0},
		{"a control character", [][]*dfspb.ListEntry{{f("/a\nb")}}, 0},
		{"a relative path", [][]*dfspb.ListEntry{{f("a")}}, 0},
		{"a page above the largest", [][]*dfspb.ListEntry{many}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			cfg := DefaultConfig()
			cfg.Coordinators = []string{serveCoordinator(t, &pagesCoordinator{pages: tc.pages})}
			cl := newClient(t, cfg)
			seen := 0
			err := cl.ListPages(t.Context(), "/", true, func(page []DirEntry) error {
				seen += len(page)
				return nil
			})
			is.True(errors.Is(err, rpc.Internal)) // refused
			is.Equal(seen, tc.seen)               // the broken page was not handed on
		})
	}
	// The same directory and file in the right order pass.
	is := is.New(t)
	cfg := DefaultConfig()
	cfg.Coordinators = []string{serveCoordinator(t, &pagesCoordinator{pages: [][]*dfspb.ListEntry{{f("/a-b"), d("/a")}, {f("/a0")}}})}
	n := 0
	for _, err := range newClient(t, cfg).List(t.Context(), "/", nil) {
		is.NoErr(err) // in listing order: /a-b, /a/, /a0
		n++
	}
	is.Equal(n, 3) // every entry
}

// pagesCoordinator answers ListFiles with fixed pages, whatever is asked:
// page i promises more unless it is the last.
type pagesCoordinator struct {
	dfspb.UnimplementedCoordinatorServer
	pages [][]*dfspb.ListEntry
}

func (c *pagesCoordinator) ListFiles(_ context.Context, req *dfspb.ListFilesRequest) (*dfspb.ListFilesResponse, error) {
	i := 0
	if req.PageToken != "" {
		i, _ = strconv.Atoi(req.PageToken)
	}
	if i >= len(c.pages) {
		return nil, rpc.ToStatus(rpc.Errorf(rpc.Invalid, "invalid page token"))
	}
	resp := &dfspb.ListFilesResponse{Entries: c.pages[i]}
	if i+1 < len(c.pages) {
		resp.NextPageToken = strconv.Itoa(i + 1)
	}
	return resp, nil
}

// TestListPageSizeValidated: the page size of a listing is 0 (the
// coordinator's) to the coordinator's largest.
func TestListPageSizeValidated(t *testing.T) {
	is := is.New(t)
	cfg := DefaultConfig()
	for _, n := range []int{0, 1, maxListPage} {
		cfg.ListPageSize = n
		is.NoErr(cfg.Validate()) // in range
	}
	for _, n := range []int{-1, maxListPage + 1} {
		cfg.ListPageSize = n
		is.True(errors.Is(cfg.Validate(), rpc.Invalid)) // out of range
	}
}
