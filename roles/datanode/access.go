package datanode

import (
	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// accessRules says who may call each datanode method at all, when the
// node runs with TLS. A method missing here is refused
// (TestAccessRulesComplete). The data calls are open to anyone: what
// authorizes them is the chunk token each must present (see
// Node.authorize), which the coordinator gives only to whom it lets read
// or write the chunk; a caller with a bearer token has no certificate to
// show a datanode. The control calls are the coordinator's, and those
// that change chunks (repairs, deletions) need a token too.
var accessRules = map[string]auth.Rule{
	"PrepareChunkUpload":   auth.Anyone,
	"UploadChunkStream":    auth.Anyone,
	"PrepareChunkDownload": auth.Anyone,
	"DownloadChunkStream":  auth.Anyone,
	"ReadChunks":           auth.Anyone,
	"WriteChunks":          auth.Anyone,
	"HealthCheck":          auth.Anyone,
	"StatChunks":           auth.CoordinatorOnly,
	"ReplicateChunk":       auth.CoordinatorOnly,
	"VerifyChunk":          auth.CoordinatorOnly,
	"DeleteChunk":          auth.CoordinatorOnly,
	"BulkDeleteChunk":      auth.CoordinatorOnly,
}

// access is the node's access policy.
func (n *Node) access() auth.Policy {
	return auth.Policy{Service: dfspb.DataNode_ServiceDesc.ServiceName, Rules: accessRules}
}
