package client

// SetCommittedSum replaces the file checksum r checks a whole read
// against, as a coordinator that recorded another would: for the tests of
// package client_test.
func SetCommittedSum(r *Reader, sum []byte) { r.head.Sha256 = sum }

// FrameDigestsKept returns the frame digests r keeps of chunk id, or nil.
func FrameDigestsKept(r *Reader, id string) [][]byte { return r.digests.get(id) }

// KeepFrameDigests makes r keep frames as the frame digests of chunk id,
// as if a read had verified them.
func KeepFrameDigests(r *Reader, id string, frames [][]byte) {
	r.digests = newDigestCache(maxDigestBytes)
	r.digests.put(id, frames)
}
