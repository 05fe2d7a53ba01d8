// Package rpc is the vocabulary shared by every dfs role: distinct types for
// IDs and paths, the error kinds and their mapping to gRPC status codes, and
// the helpers that dial, listen and pool gRPC connections. The generated
// protocol code lives in rpc/dfspb.
package rpc
