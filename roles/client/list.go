package client

import (
	"context"
	"errors"
	"iter"
	"strings"
	"time"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// maxListPage is the most entries a coordinator puts in one page of a
// listing.
const maxListPage = 10000

// ListPages calls fn with the entries below dir, a page at a time, in
// path order: one level (files and directories), or with recursive every
// file and directory below dir, each directory before what it holds. A
// file lists itself. fn is not called for an empty listing.
//
// The next page is asked for only after fn returns, so a listing holds
// at most one page (Config.ListPageSize entries) in memory however long
// it is; fn may keep the slice it is given. An error from fn stops the
// listing and is returned as it is; other errors carry the operation
// ("ls"), dir and the request ID. A missing dir fails with NotFound, an
// invalid one with Invalid; a reply that is not a page of a listing (an
// invalid path, entries out of order or repeated, an empty page that
// promises more, a page above the coordinator's largest) fails with
// Internal, so a broken coordinator cannot make the listing loop or hold
// more than a page.
//
// Each page is read at its own moment, so the listing of a namespace that
// changes meanwhile is not a snapshot; still each path is listed at most
// once, and every path that exists throughout the listing is listed.
func (c *Client) ListPages(ctx context.Context, dir string, recursive bool, fn func(page []DirEntry) error) error {
	ctx = rpc.EnsureRequestID(ctx)
	stopped := false // fn's error, returned as it is
	err := c.listPages(ctx, dir, ListOptions{Recursive: recursive}, func(page []DirEntry) error {
		err := fn(page)
		stopped = err != nil
		return err
	})
	if err != nil && !stopped {
		return wrap(ctx, "ls", dir, err)
	}
	return err
}

// listPages is ListPages without the wrapping of its errors.
func (c *Client) listPages(ctx context.Context, dir string, opts ListOptions, fn func(page []DirEntry) error) error {
	token, last := "", ""
	if opts.After != "" {
		if _, err := rpc.ParsePath(strings.TrimSuffix(opts.After, "/")); err != nil {
			return rpc.Errorf(rpc.Invalid, "list after %q: %w", opts.After, err)
		}
		last = opts.After
	}
	// Each page moves last forward (checked below); ctx bounds the rest.
	for {
		var resp *dfspb.ListFilesResponse
		err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
			var err error
			req := &dfspb.ListFilesRequest{Path: dir, Recursive: opts.Recursive, PageSize: uint32(c.cfg.ListPageSize), PageToken: token,
				WithMetadata: opts.Metadata}
			if token == "" {
				req.StartAfter = opts.After
			}
			resp, err = cc.ListFiles(ctx, req)
			return err
		})
		if err != nil {
			return err
		}
		page, err := listPage(resp, &last)
		if err != nil {
			return err
		}
		if len(page) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if resp.NextPageToken == "" {
			return nil
		}
		token = resp.NextPageToken
	}
}

// listPage checks one page of a listing and converts its entries. last is
// the key (listKey) of the last entry of the pages before; it moves to the
// last of this one.
func listPage(resp *dfspb.ListFilesResponse, last *string) ([]DirEntry, error) {
	switch {
	case len(resp.Entries) > maxListPage:
		return nil, rpc.Errorf(rpc.Internal, "coordinator returned a page of %d entries (the most is %d)", len(resp.Entries), maxListPage)
	case len(resp.Entries) == 0 && resp.NextPageToken != "":
		return nil, rpc.Errorf(rpc.Internal, "coordinator returned an empty page of a listing with more to follow")
	}
	page := make([]DirEntry, 0, len(resp.Entries))
	for _, le := range resp.Entries {
		if _, err := rpc.ParsePath(le.Path); err != nil {
			return nil, rpc.Errorf(rpc.Internal, "coordinator listed an invalid path: %w", err)
		}
		k := listKey(le.Path, le.IsDir)
		if k <= *last {
			return nil, rpc.Errorf(rpc.Internal, "coordinator listed %s after %s: out of order", ShowPath(k), ShowPath(*last))
		}
		*last = k
		e := DirEntry{Path: le.Path, IsDir: le.IsDir, Owner: le.Owner, Group: le.Group, Mode: fromMode(le.Mode, le.IsDir)}
		if !le.IsDir {
			e.Size, e.Chunks, e.Replication, e.Metadata = le.Size, le.Chunks, le.Replication, le.Metadata
		}
		if le.ModifiedUnixMs != 0 || !le.IsDir {
			e.Modified = time.UnixMilli(le.ModifiedUnixMs).UTC()
		}
		page = append(page, e)
	}
	return page, nil
}

// listKey is the key a listing is ordered by: a directory sorts as its
// path with a trailing slash, where the files below it would.
func listKey(p string, dir bool) string {
	if dir {
		return p + "/"
	}
	return p
}

// errStopped ends ListPages when the consumer of List stops early.
var errStopped = errors.New("listing stopped by its consumer")

// ListOptions are the choices of a listing.
type ListOptions struct {
	// Recursive lists every file and directory below the directory;
	// without it the listing is one level: its files and directories.
	Recursive bool
	// Metadata fills each file's DirEntry.Metadata.
	Metadata bool
	// After starts the listing after this path, in listing order: paths
	// sort bytewise, a directory's with a trailing slash ("/a/b.txt" <
	// "/a/b/" < "/a/b0"), so a listing can be taken up again where an
	// earlier one stopped (After: the last path it gave, with the slash
	// for a directory) without reading what came before.
	After string
}

// List returns the listing of ListPages (one level, or with
// opts.Recursive everything below dir; opts may be nil) as an iterator,
// reading a page from the coordinator when the one before is used up, so
// it holds at most one page in memory however large the directory. An
// error ends the iteration as its last pair, with a zero DirEntry.
// Breaking out of the loop stops the listing; the iterator can be ranged
// over more than once, each time listing afresh.
//
//	for e, err := range c.List(ctx, "/logs", nil) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(e.Path, e.Size)
//	}
func (c *Client) List(ctx context.Context, dir string, opts *ListOptions) iter.Seq2[DirEntry, error] {
	var o ListOptions
	if opts != nil {
		o = *opts
	}
	return func(yield func(DirEntry, error) bool) {
		ctx := rpc.EnsureRequestID(ctx)
		err := c.listPages(ctx, dir, o, func(page []DirEntry) error {
			for _, e := range page {
				if !yield(e, nil) {
					return errStopped
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStopped) {
			yield(DirEntry{}, wrap(ctx, "ls", dir, err))
		}
	}
}
