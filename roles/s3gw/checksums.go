package s3gw

import (
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/versity/versitygw/s3api/middlewares"
	"github.com/versity/versitygw/s3api/utils"
)

// An object's x-amz-checksum-*: one given in a header is checked against
// the body as it streams (a mismatch fails the write with BadDigest and
// nothing commits); a trailing one (aws-chunked) versitygw's reader
// checks. Either is kept in the metadata ("s3.checksum-crc32": its base64
// value) and returned by GET and HEAD with x-amz-checksum-mode: ENABLED.

// metaChecksum prefixes the metadata key of a checksum, by algorithm in
// lower case.
const metaChecksum = "s3.checksum-"

// checksums are the x-amz-checksum-* headers of a request, in the order
// of S3's algorithms.
type checksums struct {
	CRC32, CRC32C, SHA1, SHA256, CRC64NVME, SHA512, MD5, XXHASH64, XXHASH3, XXHASH128 *string
}

// given returns the checksums set, by hash type.
func (c checksums) given() map[utils.HashType]string {
	out := map[utils.HashType]string{}
	for ht, v := range map[utils.HashType]*string{
		utils.HashTypeCRC32: c.CRC32, utils.HashTypeCRC32C: c.CRC32C, utils.HashTypeSha1: c.SHA1, utils.HashTypeSha256: c.SHA256,
		utils.HashTypeCRC64NVME: c.CRC64NVME, utils.HashTypeSha512: c.SHA512, utils.HashTypeMd5: c.MD5, utils.HashTypeXXHASH64: c.XXHASH64,
		utils.HashTypeXXHASH3: c.XXHASH3, utils.HashTypeXXHASH128: c.XXHASH128,
	} {
		if v != nil && *v != "" {
			out[ht] = *v
		}
	}
	return out
}

// checkedBody wraps body so that reading it to its end checks every
// checksum given; it also returns a function that, once the body is read,
// adds the checksums it carried (given or trailing) to md.
func checkedBody(body io.Reader, sums checksums) (io.Reader, func(md map[string]string), error) {
	given := sums.given()
	r := body
	for ht, v := range given {
		hr, err := utils.NewHashReader(r, v, ht)
		if err != nil {
			return nil, nil, err
		}
		r = hr
	}
	record := func(md map[string]string) {
		for ht, v := range given {
			md[metaChecksum+string(ht)] = v
		}
		if cr, ok := body.(middlewares.ChecksumReader); ok && cr.Algorithm() != "" && cr.Checksum() != "" {
			md[metaChecksum+strings.ToLower(cr.Algorithm())] = cr.Checksum()
		}
	}
	return r, record, nil
}

// storedChecksums returns the checksums kept in md, for a response.
func storedChecksums(md map[string]string) (c checksums, typ types.ChecksumType) {
	for ht, dst := range map[utils.HashType]**string{
		utils.HashTypeCRC32: &c.CRC32, utils.HashTypeCRC32C: &c.CRC32C, utils.HashTypeSha1: &c.SHA1, utils.HashTypeSha256: &c.SHA256,
		utils.HashTypeCRC64NVME: &c.CRC64NVME, utils.HashTypeSha512: &c.SHA512, utils.HashTypeMd5: &c.MD5, utils.HashTypeXXHASH64: &c.XXHASH64,
		utils.HashTypeXXHASH3: &c.XXHASH3, utils.HashTypeXXHASH128: &c.XXHASH128,
	} {
		if v, ok := md[metaChecksum+string(ht)]; ok {
			*dst, typ = &v, types.ChecksumTypeFullObject
		}
	}
	return c, typ
}
