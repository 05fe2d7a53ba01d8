package coordinator

func benchIndex() (*locations, *refIndex) { ix := newChunkIndex(); return ix, ix.refs() }
