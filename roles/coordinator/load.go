package coordinator

import (
	"context"
	"sync"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
)

// loadBatch is how many files the walk of the store hands the chunk index
// at a time while a term loads.
const loadBatch = 4096

// fileBatch is a batch of committed files as the chunk index needs them,
// their replication and chunks, in memory reused from one batch to the
// next: the chunks of all the files in one slice, their digests in one
// arena.
type fileBatch struct {
	files   []meta.File // Replication and Chunks only
	ends    []int       // where each file's chunks end in chunks
	chunks  []meta.Chunk
	digests []byte
}

func (b *fileBatch) reset() {
	b.files, b.ends, b.chunks, b.digests = b.files[:0], b.ends[:0], b.chunks[:0], b.digests[:0]
}

// add copies a file's replication and chunks into the batch. A digest is
// a slice of the arena as it is when added: one the arena outgrows stays
// valid in the array it was written to.
func (b *fileBatch) add(repl uint32, chunks []meta.Chunk) {
	for _, c := range chunks {
		start := len(b.digests)
		b.digests = append(b.digests, c.Digest...)
		c.Digest = b.digests[start:len(b.digests):len(b.digests)]
		b.chunks = append(b.chunks, c)
	}
	b.files = append(b.files, meta.File{Replication: repl})
	b.ends = append(b.ends, len(b.chunks))
}

// seal points each file at its chunks, once the batch is full.
func (b *fileBatch) seal() {
	start := 0
	for i, end := range b.ends {
		b.files[i].Chunks = b.chunks[start:end:end]
		start = end
	}
}

// walkFiles calls fn with the replication and chunks of every committed
// file of l, in path order: through meta.ChunkLoader when l has it (it
// decodes only those), otherwise through Files. fn's chunks are reused
// once it returns.
func walkFiles(ctx context.Context, l meta.Loader, fn func(repl uint32, chunks []meta.Chunk) error) error {
	if cl, ok := l.(meta.ChunkLoader); ok {
		return cl.FileChunks(ctx, func(fc *meta.FileChunks) error { return fn(fc.Replication, fc.Chunks) })
	}
	return l.Files(ctx, func(f *meta.File) error { return fn(f.Replication, f.Chunks) })
}

// loadFiles adds every committed file of l to refs and returns how many
// files and chunks it added. The walk of the store (reading and decoding)
// runs on a goroutine of its own and hands the index batches of loadBatch
// files, eight batches in turn, so that the two halves of the work run
// on two cores; progress, when not nil, is called after each batch with
// the files added so far. When ctx ends, the walk stops at its next file
// and loadFiles returns ctx's error once the batches already walked are
// in (at most eight: milliseconds).
func loadFiles(ctx context.Context, l meta.Loader, refs *refIndex, progress func(files int)) (files, chunks int, err error) {
	const batches = 8
	full := make(chan *fileBatch, batches) // the walk runs ahead of the index by up to all of them
	free := make(chan *fileBatch, batches)
	for range batches {
		free <- &fileBatch{}
	}
	var walkErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(full)
		walkErr = fillBatches(ctx, l, full, free)
	})
	for b := range full {
		refs.addAll(b.files)
		files += len(b.files)
		chunks += len(b.chunks)
		free <- b // never blocks: it has room for every batch
		if progress != nil {
			progress(files)
		}
	}
	wg.Wait()
	return files, chunks, walkErr
}

// fillBatches walks l's files into batches taken from free and sends each
// full one, and the last one, on full; it returns when the walk is over,
// fails, or ctx ends.
func fillBatches(ctx context.Context, l meta.Loader, full chan<- *fileBatch, free <-chan *fileBatch) error {
	var b *fileBatch
	take := func() error {
		select {
		case b = <-free:
			b.reset()
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	send := func() error {
		b.seal()
		select {
		case full <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
		return take()
	}
	if err := take(); err != nil {
		return err
	}
	err := walkFiles(ctx, l, func(repl uint32, chunks []meta.Chunk) error {
		b.add(repl, chunks)
		if len(b.files) < loadBatch {
			return nil
		}
		return send()
	})
	if err == nil && len(b.files) > 0 {
		err = send()
	}
	if err == nil {
		err = ctx.Err() // a walk that ignores ctx (a store in memory) stops at the next batch
	}
	return err
}
