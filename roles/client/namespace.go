package client

import (
	"context"
	"errors"
	"io/fs"

	"github.com/dfs-project/dfs/rpc"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// The namespace calls: each is one call to the coordinator, and none moves
// a chunk byte.

// Remove removes a file, or an empty directory. Its chunks are deleted
// from the datanodes in the background. A missing path fails with
// NotFound (errors.Is(err, fs.ErrNotExist)); a directory that is not
// empty with NotEmpty.
func (c *Client) Remove(ctx context.Context, path string) error {
	ctx = rpc.EnsureRequestID(ctx)
	return wrap(ctx, "rm", path, c.deleteFile(ctx, &dfspb.DeleteFileRequest{Path: path}))
}

// RemoveAll removes path and everything below it. It is not atomic: the
// files go one by one, then the directories, deepest first; a failure
// halfway leaves the rest. A missing path is not an error, as with
// os.RemoveAll.
func (c *Client) RemoveAll(ctx context.Context, path string) error {
	ctx = rpc.EnsureRequestID(ctx)
	err := c.deleteFile(ctx, &dfspb.DeleteFileRequest{Path: path, Recursive: true})
	if rpc.KindOf(err) == rpc.NotFound {
		return nil
	}
	return wrap(ctx, "rm -r", path, err)
}

// deleteFile calls DeleteFile.
func (c *Client) deleteFile(ctx context.Context, req *dfspb.DeleteFileRequest) error {
	return c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		_, err := cc.DeleteFile(ctx, req)
		return err
	})
}

// Mkdir creates a directory. Its parent must exist (else NotFound); a
// path that exists fails with Exists (errors.Is(err, fs.ErrExist)).
func (c *Client) Mkdir(ctx context.Context, path string) error {
	ctx = rpc.EnsureRequestID(ctx)
	return wrap(ctx, "mkdir", path, c.mkdir(ctx, path, false))
}

// MkdirAll creates a directory and its missing ancestors. An existing
// directory is not an error; a file on the way fails with Exists.
func (c *Client) MkdirAll(ctx context.Context, path string) error {
	ctx = rpc.EnsureRequestID(ctx)
	return wrap(ctx, "mkdir -p", path, c.mkdir(ctx, path, true))
}

// mkdir calls Mkdir.
func (c *Client) mkdir(ctx context.Context, path string, parents bool) error {
	return c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		_, err := cc.Mkdir(ctx, &dfspb.MkdirRequest{Path: path, Parents: parents})
		return err
	})
}

// Chmod sets the permission bits and the sticky bit of a file or
// directory to those of mode (mode.Perm() and fs.ModeSticky; fs.ModeDir
// is ignored, any other bit refused). Only the owner or a superuser may;
// a refusal is an error matching fs.ErrPermission.
func (c *Client) Chmod(ctx context.Context, path string, mode fs.FileMode) error {
	ctx = rpc.EnsureRequestID(ctx)
	m, err := toMode(mode)
	if err != nil {
		return wrap(ctx, "chmod", path, err)
	}
	return wrap(ctx, "chmod", path, c.setAttr(ctx, &dfspb.SetAttrRequest{Path: path, Mode: m, SetMode: true}))
}

// Chown sets the owner and group of a file or directory; an empty user
// or group stays as it is. Only a superuser may change the owner; the
// owner may change the group to one they are in. A refusal is an error
// matching fs.ErrPermission.
func (c *Client) Chown(ctx context.Context, path, user, group string) error {
	ctx = rpc.EnsureRequestID(ctx)
	return wrap(ctx, "chown", path, c.setAttr(ctx, &dfspb.SetAttrRequest{Path: path, Owner: user, Group: group}))
}

// setAttr calls SetAttr.
func (c *Client) setAttr(ctx context.Context, req *dfspb.SetAttrRequest) error {
	return c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		_, err := cc.SetAttr(ctx, req)
		return err
	})
}

// RenameOptions are the choices of Rename.
type RenameOptions struct {
	// NoReplace refuses, with Exists, a destination that exists.
	NoReplace bool
}

// Rename moves a file, or a directory with everything below it, in one
// atomic commit on the coordinator: no chunk moves. A file replaces a
// file at dst unless opts.NoReplace (opts may be nil).
func (c *Client) Rename(ctx context.Context, src, dst string, opts *RenameOptions) error {
	ctx = rpc.EnsureRequestID(ctx)
	req := &dfspb.RenameRequest{Src: src, Dst: dst, NoReplace: opts != nil && opts.NoReplace}
	return wrap(ctx, "mv", src+" "+dst, c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		_, err := cc.Rename(ctx, req)
		return err
	}))
}

// CopyOptions are the preconditions of Copy on its destination.
type CopyOptions struct {
	// IfNotExist copies only if dst holds no file (else Exists).
	IfNotExist bool
	// IfVersion, when not 0, copies only over that version of dst (else
	// FailedPrecondition).
	IfVersion uint64
	// Metadata, when not nil, is dst's metadata (see
	// CreateOptions.Metadata); nil keeps src's. With Metadata, src may be
	// dst: the file gets a new version with the same bytes and the new
	// metadata.
	Metadata map[string]string
	// SrcVersion, when not 0, copies only that version of src (else
	// FailedPrecondition), so what the caller looked at (its metadata, a
	// condition on it) is what is copied.
	SrcVersion uint64
}

// Copy makes dst a new file with src's content, on the coordinator: the
// new file shares src's chunks, so no chunk byte moves, and a chunk is
// deleted only when no file uses it. It returns dst's metadata, without
// its chunk map. opts may be nil.
func (c *Client) Copy(ctx context.Context, src, dst string, opts *CopyOptions) (*FileInfo, error) {
	ctx = rpc.EnsureRequestID(ctx)
	req := &dfspb.CopyFileRequest{Src: src, Dst: dst}
	if opts != nil {
		req.IfNotExist, req.IfVersion = opts.IfNotExist, opts.IfVersion
		req.ReplaceMetadata, req.Metadata, req.SrcVersion = opts.Metadata != nil, opts.Metadata, opts.SrcVersion
	}
	var out *dfspb.FileInfo
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		resp, err := cc.CopyFile(ctx, req)
		if err == nil {
			out = resp.File
		}
		return err
	})
	if err == nil && out == nil {
		err = rpc.Errorf(rpc.Internal, "coordinator returned no file for the copy")
	}
	if err != nil {
		return nil, wrap(ctx, "cp", src+" "+dst, err)
	}
	return fromFileInfo(out), nil
}

// ConcatOptions are the choices of Concat.
type ConcatOptions struct {
	// IfNotExist and IfVersion are preconditions on dst, as CopyOptions'.
	IfNotExist bool
	IfVersion  uint64
	// Metadata is dst's metadata (see CreateOptions.Metadata).
	Metadata map[string]string
}

// Concat makes dst a new file with the bytes of srcs one after the other,
// on the coordinator, in one atomic commit: the new file shares the
// sources' chunks, as Copy does, so no chunk byte moves; the sources stay
// as they are (remove them afterwards if they were parts). A file's
// chunks are all of one size but its last, so every source but the last
// must be whole chunks of one size: the first chunk's; other sources fail
// with Invalid, and their bytes must be copied instead (Open, then
// Create). The new file has no whole-file SHA-256 (FileInfo.SHA256 is
// nil): the digests of its chunks and of their frames verify every byte
// read. At most 10,000 sources; opts may be nil.
func (c *Client) Concat(ctx context.Context, dst string, srcs []string, opts *ConcatOptions) (*FileInfo, error) {
	ctx = rpc.EnsureRequestID(ctx)
	req := &dfspb.ConcatFilesRequest{Srcs: srcs, Dst: dst}
	if opts != nil {
		req.IfNotExist, req.IfVersion, req.Metadata = opts.IfNotExist, opts.IfVersion, opts.Metadata
	}
	var out *dfspb.FileInfo
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		resp, err := cc.ConcatFiles(ctx, req)
		if err == nil {
			out = resp.File
		}
		return err
	})
	if err == nil && out == nil {
		err = rpc.Errorf(rpc.Internal, "coordinator returned no file for the concatenation")
	}
	if err != nil {
		return nil, wrap(ctx, "concat", dst, err)
	}
	return fromFileInfo(out), nil
}

// Usage sums what lies below path (du), on the coordinator: the bytes
// and the files, and the directories.
func (c *Client) Usage(ctx context.Context, path string) (Usage, error) {
	ctx = rpc.EnsureRequestID(ctx)
	var out Usage
	err := c.coordinator(ctx, func(ctx context.Context, cc dfspb.CoordinatorClient) error {
		resp, err := cc.Usage(ctx, &dfspb.UsageRequest{Path: path})
		if err == nil {
			out = Usage{Bytes: resp.Bytes, Files: resp.Files, Dirs: resp.Dirs}
		}
		return err
	})
	return out, wrap(ctx, "du", path, err)
}

// WalkFunc is called by Walk for each file and directory, as
// fs.WalkDirFunc is by fs.WalkDir: with err set when root cannot be read
// (e zero then) or when a directory's listing fails (a second call for
// that directory). Returning fs.SkipDir skips the directory (or, for a
// file, the rest of its directory); fs.SkipAll ends the walk; any other
// error ends the walk and is returned.
type WalkFunc func(path string, e DirEntry, err error) error

// Walk calls fn for root and everything below it, in listing order (a
// directory's entries by name, a directory before what it holds). It
// reads each directory a page at a time, so it holds at most one page of
// each directory on the path from root down.
func (c *Client) Walk(ctx context.Context, root string, fn WalkFunc) error {
	ctx = rpc.EnsureRequestID(ctx)
	var top DirEntry
	fi, err := c.head(ctx, root)
	switch {
	case err == nil && !fi.IsDir:
		top = fromFileInfo(fi).dirEntry()
		err = fn(root, top, nil)
		if errors.Is(err, fs.SkipDir) || errors.Is(err, fs.SkipAll) {
			return nil
		}
		return err
	case err == nil:
		top = DirEntry{Path: root, IsDir: true}
	case rpc.KindOf(err) == rpc.NotFound:
		// Perhaps a directory that the coordinator knows only by the files
		// below it: the listing tells.
		err = c.listPages(ctx, root, ListOptions{}, func([]DirEntry) error { return errStopped })
		if err == nil || errors.Is(err, errStopped) {
			top = DirEntry{Path: root, IsDir: true}
			break
		}
		fallthrough
	default:
		err = fn(root, DirEntry{}, wrap(ctx, "walk", root, err))
		if errors.Is(err, fs.SkipDir) || errors.Is(err, fs.SkipAll) {
			return nil
		}
		return err
	}
	if err := fn(root, top, nil); err != nil {
		if errors.Is(err, fs.SkipDir) || errors.Is(err, fs.SkipAll) {
			return nil
		}
		return err
	}
	err = c.walkDir(ctx, root, fn)
	if errors.Is(err, fs.SkipAll) {
		return nil
	}
	return err
}

// walkDir walks what dir holds; fn was called for dir itself. It returns
// fs.SkipAll as it is, for Walk to stop.
func (c *Client) walkDir(ctx context.Context, dir string, fn WalkFunc) error {
	err := c.listPages(ctx, dir, ListOptions{}, func(page []DirEntry) error {
		for _, e := range page {
			if e.Path == dir && !e.IsDir {
				continue // a file lists itself: dir became a file meanwhile
			}
			err := fn(e.Path, e, nil)
			switch {
			case e.IsDir && errors.Is(err, fs.SkipDir):
				continue
			case errors.Is(err, fs.SkipDir):
				return err // the rest of this directory is skipped
			case err != nil:
				return &walkStop{err}
			}
			if e.IsDir {
				if err := c.walkDir(ctx, e.Path, fn); err != nil {
					return &walkStop{err}
				}
			}
		}
		return nil
	})
	var stop *walkStop
	switch {
	case err == nil, errors.Is(err, fs.SkipDir) && !errors.As(err, &stop):
		return nil
	case errors.As(err, &stop):
		return stop.err
	}
	// The listing failed: fn decides.
	if err := fn(dir, DirEntry{Path: dir, IsDir: true}, wrap(ctx, "walk", dir, err)); err != nil && !errors.Is(err, fs.SkipDir) {
		return err
	}
	return nil
}

// walkStop carries fn's error out of a listing, so that it is not taken
// for the listing's own.
type walkStop struct{ err error }

func (w *walkStop) Error() string { return w.err.Error() }

// dirEntry returns the listing entry of fi.
func (fi *FileInfo) dirEntry() DirEntry {
	if fi.IsDir {
		return DirEntry{Path: fi.Path, IsDir: true, Modified: fi.Modified, Owner: fi.Owner, Group: fi.Group, Mode: fi.Mode}
	}
	return DirEntry{Path: fi.Path, Size: fi.Size, Chunks: fi.ChunkCount, Replication: fi.Replication, Modified: fi.Modified,
		Owner: fi.Owner, Group: fi.Group, Mode: fi.Mode}
}
