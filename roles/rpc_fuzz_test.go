package roles_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/dfs-project/dfs/roles/rolestest"
	"github.com/dfs-project/dfs/rpc/dfspb"
)

// TestEveryRPCSurvivesBadInput calls every RPC of both services, on a live
// cluster, with an empty request and with requests whose fields are filled
// at random (paths that leave the root, NUL bytes, negative and huge
// sizes, real node and chunk IDs in the wrong places, long lists). Each
// call ends with success or a gRPC status carrying a message, never an
// unclassified error or a dropped connection, the roles keep serving, and
// a file stored before reads back whole.
func TestEveryRPCSurvivesBadInput(t *testing.T) {
	t.Parallel()
	c := rolestest.Start(t, 3)
	cl := rolestest.Client(t, c)
	// The fuzzer names /fuzz and its file, which a valid call may move or
	// remove (rename, rm -r); the files checked at the end live where no
	// call names them.
	putFiles(t, cl, "/fuzz", 3*rolestest.ChunkSize+1)
	files := putFiles(t, cl, "/kept", 3*rolestest.ChunkSize+1, 1000)
	fi, err := cl.Stat(t.Context(), "/fuzz/0")
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	f := &fuzzer{rng: rand.New(rand.NewPCG(seed, seed>>1)), chunkID: fi.Chunks[0].ID, words: []string{
		"", "/", "//", "/a/../b", "..", "a", "/fuzz", "/fuzz/", "/fuzz/x\x00y", "/ünï/\u202ecod",
		strings.Repeat("x", 5000), "/" + strings.Repeat("d/", 600),
		"00000000-0000-0000-0000-000000000000", "../../../../etc/passwd", "127.0.0.1:1", "[::1]:0",
		fi.Chunks[0].ID, fi.Chunks[0].ID + "/../x", fi.Chunks[0].ID[:10],
		string(c.Nodes()[1].Node.ID()), string(c.Nodes()[2].Node.ID()), c.Nodes()[1].Node.Addr(),
	}}

	coord := testDial(t, c.Addr())
	dn := testDial(t, c.Nodes()[0].Node.Addr())
	services := dfspb.File_dfs_proto.Services()
	calls := 0
	for i := range services.Len() {
		sd := services.Get(i)
		cc := coord
		if sd.Name() == "DataNode" {
			cc = dn
		}
		for j := range sd.Methods().Len() {
			md := sd.Methods().Get(j)
			name := fmt.Sprintf("/%s/%s", sd.FullName(), md.Name())
			for round := range 40 {
				req := dynamicpb.NewMessage(md.Input())
				if round > 0 {
					f.fill(req, 0)
				}
				err := f.call(t.Context(), cc, md, name, req)
				calls++
				if err == nil {
					continue
				}
				st, ok := status.FromError(err)
				if !ok || st.Code() == codes.Unknown || st.Message() == "" {
					t.Fatalf("%s(%v): %v; want a status with a message (seed %d)", name, shorten(req), err, seed)
				}
			}
		}
	}
	t.Logf("%d calls", calls)

	// Every role still serves, and nothing stored was lost.
	for i, n := range c.Nodes() {
		if _, err := nodeClient(t, c, i).HealthCheck(t.Context(), &dfspb.HealthCheckRequest{}); err != nil {
			t.Fatalf("datanode %s after the calls: %v", n.Node.ID().Short(), err)
		}
	}
	if _, err := coordClient(t, c).ListNodes(t.Context(), &dfspb.ListNodesRequest{}); err != nil {
		t.Fatalf("coordinator after the calls: %v", err)
	}
	checkFiles(t, cl, files)
}

// fuzzer fills requests with values chosen to be wrong in many ways.
type fuzzer struct {
	rng     *rand.Rand
	chunkID string // a stored chunk's
	words   []string
}

// call sends req to the method and reads what comes back: a streaming
// call sends req (a client stream up to three times), closes its side and
// reads up to a bounded number of messages.
func (f *fuzzer) call(ctx context.Context, cc *grpc.ClientConn, md protoreflect.MethodDescriptor, name string, req proto.Message) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp := dynamicpb.NewMessage(md.Output())
	if !md.IsStreamingClient() && !md.IsStreamingServer() {
		return cc.Invoke(ctx, name, req, resp)
	}
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: md.IsStreamingClient(), ServerStreams: md.IsStreamingServer()}, name)
	if err != nil {
		return err
	}
	sends := 1
	if md.IsStreamingClient() {
		sends = 1 + f.rng.IntN(3)
	}
	for range sends {
		if err := s.SendMsg(req); err != nil {
			break // the server ended the stream: RecvMsg says why
		}
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for range 10000 {
		if err := s.RecvMsg(resp); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
	return nil
}

// fill sets each field of m, with some chance, to a hostile value;
// messages nest up to three levels.
func (f *fuzzer) fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if f.rng.IntN(3) == 0 {
			continue
		}
		switch {
		case fd.IsMap():
			continue // none in dfs.proto
		case fd.IsList():
			list := m.Mutable(fd).List()
			if fd.Kind() == protoreflect.StringKind && f.rng.IntN(10) == 0 {
				// Above every bulk limit (in a message the client can
				// still send).
				for range 10001 + f.rng.IntN(3) {
					list.Append(protoreflect.ValueOfString(f.chunkID))
				}
				continue
			}
			for range f.rng.IntN(4) {
				if fd.Kind() == protoreflect.MessageKind {
					if depth < 3 {
						e := list.NewElement()
						f.fill(e.Message(), depth+1)
						list.Append(e)
					}
					continue
				}
				list.Append(f.scalar(fd))
			}
		case fd.Kind() == protoreflect.MessageKind:
			if depth < 3 {
				f.fill(m.Mutable(fd).Message(), depth+1)
			}
		default:
			m.Set(fd, f.scalar(fd))
		}
	}
}

func (f *fuzzer) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	ints := []int64{0, 1, -1, 7, 4096, 1 << 20, 64 << 20, 64<<20 + 1, 1 << 40, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64, f.rng.Int64()}
	i := ints[f.rng.IntN(len(ints))]
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(f.rng.IntN(2) == 0)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(f.rng.IntN(6) - 1))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(i))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(i)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(i))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(i))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(i))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(i))
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(f.words[f.rng.IntN(len(f.words))])
	case protoreflect.BytesKind:
		sizes := []int{0, 1, 31, 32, 33, 4096}
		b := make([]byte, sizes[f.rng.IntN(len(sizes))])
		for k := range b {
			b[k] = byte(f.rng.IntN(256))
		}
		return protoreflect.ValueOfBytes(b)
	}
	panic(fmt.Sprintf("field %s: kind %v not handled", fd.FullName(), fd.Kind()))
}

// shorten prints a request for a failure message, cut to a readable size.
func shorten(m proto.Message) string {
	s := fmt.Sprint(m)
	if len(s) > 2000 {
		s = s[:2000] + "…"
	}
	return s
}
