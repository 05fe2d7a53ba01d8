package s3gw

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/versity/versitygw/s3err"

	"github.com/dfs-project/dfs/rpc"
)

// maxKeyLen is S3's limit on a key's length in bytes.
const maxKeyLen = 1024

// multipartRoot holds the multipart uploads in progress, by bucket: a
// top-level name starting with "." is never a bucket.
const multipartRoot = "/.s3/multipart"

// bucketPath returns the directory of a bucket. versitygw checks bucket
// names before the backend is called; a name dfs cannot hold (one starting
// with ".", or with a "/") is refused here too.
func bucketPath(bucket string) (string, error) {
	if bucket == "" || strings.HasPrefix(bucket, ".") || strings.ContainsAny(bucket, "/\x00") || len(bucket) > rpc.MaxSegmentLen {
		return "", s3err.GetBucketErr(s3err.ErrInvalidBucketName, bucket)
	}
	return "/" + bucket, nil
}

// objectPath maps bucket and key to a dfs path: /<bucket>/<key>. A key
// ending in "/" names a directory (dir is true; the path has no trailing
// slash). A key dfs cannot hold gets an S3 error: KeyTooLongError for a
// key over 1024 bytes or a segment over dfs's 255, InvalidArgument for an
// empty, "." or ".." segment, a control character or bad UTF-8.
func objectPath(bucket, key string) (path string, dir bool, err error) {
	bp, err := bucketPath(bucket)
	if err != nil {
		return "", false, err
	}
	if len(key) > maxKeyLen {
		return "", false, s3err.GetKeyTooLongErr(int64(len(key)), maxKeyLen)
	}
	if key == "" {
		return "", false, badKey(key, "the key is empty")
	}
	if !utf8.ValidString(key) {
		return "", false, badKey(key, "the key is not valid UTF-8")
	}
	dir = strings.HasSuffix(key, "/")
	k := strings.TrimSuffix(key, "/")
	for seg := range strings.SplitSeq(k, "/") {
		switch {
		case seg == "":
			return "", false, badKey(key, "dfs cannot store a key with an empty path segment (a leading slash or two slashes in a row)")
		case seg == "." || seg == "..":
			return "", false, badKey(key, `dfs cannot store a key with a "." or ".." path segment`)
		case len(seg) > rpc.MaxSegmentLen:
			return "", false, s3err.GetKeyTooLongErr(int64(len(seg)), rpc.MaxSegmentLen)
		}
		for _, r := range seg {
			if r < 0x20 || r == 0x7f {
				return "", false, badKey(key, "dfs cannot store a key with a control character")
			}
		}
	}
	p := bp + "/" + k
	if len(p) > rpc.MaxPathLen {
		return "", false, s3err.GetKeyTooLongErr(int64(len(key)), int64(rpc.MaxPathLen-len(bp)-1))
	}
	return p, dir, nil
}

// badKey is the InvalidArgument error of a key that cannot map to a path.
func badKey(key, why string) error {
	return s3err.InvalidArgumentError{Description: why, ArgumentName: "key", ArgumentValue: key}
}

// keyOf returns the key of the dfs path p in the bucket whose directory
// is bp; dir adds the trailing slash of a directory.
func keyOf(bp, p string, dir bool) string {
	k := strings.TrimPrefix(p, bp+"/")
	if dir {
		k += "/"
	}
	return k
}

// apiError is an S3 error with a code of its own.
func apiError(code string, status int, format string, args ...any) error {
	return s3err.APIError{Code: code, Description: fmt.Sprintf(format, args...), HTTPStatusCode: status}
}

// s3Error turns an SDK error into the S3 error a client expects. Errors
// that are already S3 errors (from versitygw's readers) pass as they are.
// notFound is the answer to NotFound (NoSuchKey, NoSuchBucket,
// NoSuchUpload); nil makes it NoSuchKey.
func s3Error(err error, notFound error) error {
	if err == nil {
		return nil
	}
	var api interface{ BaseError() s3err.APIError }
	if errors.As(err, &api) {
		return err
	}
	var plain s3err.APIError
	if errors.As(err, &plain) {
		return plain
	}
	switch rpc.KindOf(err) {
	case rpc.NotFound:
		if notFound != nil {
			return notFound
		}
		return s3err.GetAPIError(s3err.ErrNoSuchKey)
	case rpc.Permission, rpc.Unauthenticated:
		return apiError("AccessDenied", http.StatusForbidden, "Access Denied: %s", err)
	case rpc.FailedPrecondition:
		return s3err.GetAPIError(s3err.ErrPreconditionFailed)
	case rpc.Exists:
		return apiError("InvalidRequest", http.StatusConflict, "the key conflicts with a file or directory of the same path: %s", err)
	case rpc.NotEmpty:
		return s3err.GetAPIError(s3err.ErrDirectoryNotEmpty)
	case rpc.Invalid:
		return apiError("InvalidArgument", http.StatusBadRequest, "%s", err)
	case rpc.Unavailable, rpc.ResourceExhausted, rpc.DeadlineExceeded:
		return apiError("ServiceUnavailable", http.StatusServiceUnavailable, "the cluster cannot serve now, retry: %s", err)
	case rpc.Canceled:
		return apiError("RequestTimeout", http.StatusBadRequest, "the request was canceled: %s", err)
	}
	return apiError("InternalError", http.StatusInternalServerError, "%s", err)
}
