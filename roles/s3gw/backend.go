package s3gw

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jonboulle/clockwork"
	"github.com/rs/zerolog"
	"github.com/versity/versitygw/auth"
	"github.com/versity/versitygw/backend"
	"github.com/versity/versitygw/s3err"
	"github.com/versity/versitygw/s3response"

	"github.com/dfs-project/dfs/roles/client"
	"github.com/dfs-project/dfs/rpc"
)

// Backend is versitygw's backend over the dfs SDK. What it does not
// implement (versioning, object lock, tagging, policies, ACLs, CORS,
// website, select, restore) answers as S3 does for a bucket without them,
// or NotImplemented.
type Backend struct {
	backend.BackendUnsupported
	c     *client.Client
	users map[string]string // access key -> dfs user
	root  string            // the first access key: versitygw's root account
	clock clockwork.Clock
	log   zerolog.Logger
	base  context.Context // Run's: every request's calls derive from it
}

var _ backend.Backend = (*Backend)(nil)

func newBackend(c *client.Client, users map[string]string, clock clockwork.Clock, log zerolog.Logger) *Backend {
	return &Backend{c: c, users: users, clock: clock, log: log}
}

func (b *Backend) String() string { return "dfs" }

// act returns the context for the SDK calls of a request: derived from the
// gateway's, so a request's calls end when the gateway stops, and acting
// for the dfs user of the request's access key. The request's own context
// (fasthttp's, reused after the response) is only read here.
func (b *Backend) act(ctx context.Context) (context.Context, context.CancelFunc) {
	base := b.base
	if base == nil {
		base = ctx
	}
	out, cancel := context.WithCancel(base)
	if acc, ok := ctx.Value("account").(auth.Account); ok {
		if user := b.users[acc.Access]; user != "" {
			out = client.ActingAs(out, user)
		}
	}
	return out, cancel
}

// checkBucket answers NoSuchBucket unless the bucket's directory exists.
func (b *Backend) checkBucket(ctx context.Context, bucket string) (string, error) {
	bp, err := bucketPath(bucket)
	if err != nil {
		return "", err
	}
	fi, err := b.c.Head(ctx, bp)
	if err == nil && !fi.IsDir {
		err = rpc.Errorf(rpc.NotFound, "%s is a file", bp)
	}
	if err != nil {
		return "", b.s3Error(err, s3err.GetBucketErr(s3err.ErrNoSuchBucket, bucket))
	}
	return bp, nil
}

// ListBuckets lists the top-level directories but those starting with
// ".".
func (b *Backend) ListBuckets(ctx context.Context, in s3response.ListBucketsInput) (s3response.ListAllMyBucketsResult, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	out := s3response.ListAllMyBucketsResult{Owner: s3response.CanonicalUser{ID: in.Owner}, Prefix: in.Prefix}
	max := int(in.MaxBuckets)
	if max <= 0 {
		max = 10000
	}
	errFull := errors.New("full")
	err := b.c.ListPages(ctx, "/", false, func(page []client.DirEntry) error {
		for _, e := range page {
			name := strings.TrimPrefix(e.Path, "/")
			if !e.IsDir || strings.HasPrefix(name, ".") || !strings.HasPrefix(name, in.Prefix) || name <= in.ContinuationToken {
				continue
			}
			if len(out.Buckets.Bucket) == max {
				out.ContinuationToken = out.Buckets.Bucket[max-1].Name
				return errFull
			}
			out.Buckets.Bucket = append(out.Buckets.Bucket, s3response.ListAllMyBucketsEntry{Name: name, CreationDate: e.Modified})
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return out, b.s3Error(err, nil)
	}
	return out, nil
}

func (b *Backend) HeadBucket(ctx context.Context, in *s3.HeadBucketInput) (*s3.HeadBucketOutput, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	if _, err := b.checkBucket(ctx, deref(in.Bucket)); err != nil {
		return nil, err
	}
	return &s3.HeadBucketOutput{}, nil
}

func (b *Backend) CreateBucket(ctx context.Context, in *s3.CreateBucketInput, _ []byte) error {
	actx, cancel := b.act(ctx)
	defer cancel()
	bucket := deref(in.Bucket)
	bp, err := bucketPath(bucket)
	if err != nil {
		return err
	}
	if !validBucketName(bucket) {
		return s3err.GetBucketErr(s3err.ErrInvalidBucketName, bucket)
	}
	err = b.c.Mkdir(actx, bp)
	if errors.Is(err, fs.ErrExist) {
		fi, herr := b.c.Head(actx, bp)
		if user := b.userOf(ctx); herr == nil && fi.IsDir && (user == "" || fi.Owner == "" || fi.Owner == user) {
			return s3err.GetBucketErr(s3err.ErrBucketAlreadyOwnedByYou, bucket)
		}
		return s3err.GetBucketErr(s3err.ErrBucketAlreadyExists, bucket)
	}
	return b.s3Error(err, nil)
}

// userOf returns the dfs user of the request's access key.
func (b *Backend) userOf(ctx context.Context) string {
	if acc, ok := ctx.Value("account").(auth.Account); ok {
		return b.users[acc.Access]
	}
	return ""
}

// DeleteBucket removes an empty bucket, and its uploads in progress.
func (b *Backend) DeleteBucket(ctx context.Context, bucket string) error {
	ctx, cancel := b.act(ctx)
	defer cancel()
	bp, err := b.checkBucket(ctx, bucket)
	if err != nil {
		return err
	}
	if err := b.c.Remove(ctx, bp); err != nil {
		if rpc.KindOf(err) == rpc.NotEmpty {
			return s3err.GetBucketErr(s3err.ErrBucketNotEmpty, bucket)
		}
		return b.s3Error(err, s3err.GetBucketErr(s3err.ErrNoSuchBucket, bucket))
	}
	var dirs []string
	err = b.bucketUploads(ctx, bucket, func(dir, _ string) error {
		dirs = append(dirs, dir)
		return nil
	})
	for _, dir := range dirs {
		if rerr := b.c.RemoveAll(ctx, dir); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		b.log.Warn().Err(err).Str("bucket", bucket).Msg("remove the uploads in progress of a deleted bucket")
	}
	return nil
}

// GetBucketAcl answers an ACL granting nothing, owned by the root account, for an
// existing bucket: versitygw asks it before most bucket calls, and grants
// nothing by it (every account is an admin; dfs decides).
func (b *Backend) GetBucketAcl(ctx context.Context, in *s3.GetBucketAclInput) ([]byte, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	if _, err := b.checkBucket(ctx, deref(in.Bucket)); err != nil {
		return nil, err
	}
	return json.Marshal(auth.ACL{Owner: b.root})
}

func (b *Backend) PutBucketAcl(context.Context, string, []byte) error {
	return s3err.GetAPIError(s3err.ErrAclNotSupported)
}

func (b *Backend) GetBucketVersioning(ctx context.Context, bucket string) (s3response.GetBucketVersioningOutput, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	_, err := b.checkBucket(ctx, bucket)
	return s3response.GetBucketVersioningOutput{}, err
}

func (b *Backend) GetBucketPolicy(ctx context.Context, bucket string) ([]byte, error) {
	return nil, b.absent(ctx, bucket, s3err.ErrNoSuchBucketPolicy)
}

func (b *Backend) GetBucketCors(ctx context.Context, bucket string) ([]byte, error) {
	return nil, b.absent(ctx, bucket, s3err.ErrNoSuchCORSConfiguration)
}

func (b *Backend) GetBucketWebsite(ctx context.Context, bucket string) ([]byte, error) {
	return nil, b.absent(ctx, bucket, s3err.ErrNoSuchWebsiteConfiguration)
}

func (b *Backend) GetObjectLockConfiguration(ctx context.Context, bucket string) ([]byte, error) {
	return nil, b.absent(ctx, bucket, s3err.ErrObjectLockConfigurationNotFound)
}

func (b *Backend) GetBucketTagging(ctx context.Context, bucket string) (map[string]string, error) {
	return nil, b.absent(ctx, bucket, s3err.ErrBucketTaggingNotFound)
}

func (b *Backend) GetBucketOwnershipControls(ctx context.Context, bucket string) (types.ObjectOwnership, error) {
	return types.ObjectOwnershipBucketOwnerEnforced, b.absent(ctx, bucket, s3err.ErrOwnershipControlsNotFound)
}

// absent answers a configuration a bucket never has: NoSuchBucket, or
// code.
func (b *Backend) absent(ctx context.Context, bucket string, code s3err.ErrorCode) error {
	ctx, cancel := b.act(ctx)
	defer cancel()
	if _, err := b.checkBucket(ctx, bucket); err != nil {
		return err
	}
	return s3err.GetAPIError(code)
}

// ListBucketsAndOwners lists the buckets with their dfs owners (the admin
// API's).
func (b *Backend) ListBucketsAndOwners(ctx context.Context) ([]s3response.Bucket, error) {
	ctx, cancel := b.act(ctx)
	defer cancel()
	var out []s3response.Bucket
	err := b.c.ListPages(ctx, "/", false, func(page []client.DirEntry) error {
		for _, e := range page {
			if name := strings.TrimPrefix(e.Path, "/"); e.IsDir && !strings.HasPrefix(name, ".") {
				out = append(out, s3response.Bucket{Name: name, Owner: e.Owner})
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, b.s3Error(err, nil)
}

// validBucketName applies S3's rules to a new bucket's name: 3 to 63
// lower-case letters, digits, dots and hyphens, a letter or digit at both
// ends, no two dots in a row, not an IP address.
func validBucketName(name string) bool {
	if len(name) < 3 || len(name) > 63 || strings.Contains(name, "..") || net.ParseIP(name) != nil {
		return false
	}
	for i, r := range name {
		alnum := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || i == len(name)-1 || r != '.' && r != '-') {
			return false
		}
	}
	return true
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// s3Error is the package's s3Error, logging the failures that are the
// gateway's or the cluster's (an operator's business, not the client's).
func (b *Backend) s3Error(err error, notFound error) error {
	out := s3Error(err, notFound)
	var api interface{ BaseError() s3err.APIError }
	if out != nil && errors.As(out, &api) && api.BaseError().HTTPStatusCode >= 500 {
		b.log.Warn().Err(err).Str("code", api.BaseError().Code).Msg("s3 request failed")
	}
	return out
}
