package coordinator

import (
	"context"

	"github.com/dfs-project/dfs/auth"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// accessRules says who may call each coordinator method at all, when the
// coordinator runs with TLS. The namespace calls are open to every user
// (a client certificate, a bearer token, or a gateway acting for a user;
// not a server's certificate, whose name is no user): each checks the
// permissions of the paths it touches. A method missing here is refused
// (TestAccessRulesComplete).
var accessRules = map[string]auth.Rule{
	"UploadFile":        auth.Users,
	"AllocateChunk":     auth.Users,
	"ConfirmUpload":     auth.Users,
	"AbortUpload":       auth.Users,
	"UploadReceipts":    auth.Users,
	"DownloadFile":      auth.Users,
	"DownloadFiles":     auth.Users,
	"StatFile":          auth.Users,
	"DeleteFile":        auth.Users,
	"ListFiles":         auth.Users,
	"Mkdir":             auth.Users,
	"Rename":            auth.Users,
	"CopyFile":          auth.Users,
	"ConcatFiles":       auth.Users,
	"Usage":             auth.Users,
	"SetAttr":           auth.Users,
	"ListNodes":         auth.Authenticated,
	"ReportBadReplica":  auth.Users,
	"ReportNodeFailure": auth.Users,
	"RegisterDataNode":  auth.DatanodeOnly,
	"DataNodeHeartbeat": auth.DatanodeOnly,
	"ReportChunks":      auth.DatanodeOnly,
	"Backup":            auth.SuperuserOnly,
	"Decommission":      auth.SuperuserOnly,
	"Fsck":              auth.SuperuserOnly,
	"CreateToken":       auth.SuperuserOnly,
}

// access is the coordinator's access policy.
func (c *Coordinator) access() auth.Policy {
	return auth.Policy{Service: dfspb.Coordinator_ServiceDesc.ServiceName, Rules: accessRules, Superusers: c.cfg.Superusers}
}

// certName returns the name of the certificate the caller presented, or
// "" for a call without one (no TLS, or an in-process call).
func certName(ctx context.Context) string {
	id, ok := auth.FromContext(ctx)
	if !ok || id.Token || id.Via != "" {
		return ""
	}
	return id.User
}
