package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dfs-project/dfs/roles"
	"github.com/dfs-project/dfs/roles/client"
)

// lockedBuffer is a bytes.Buffer for concurrent log writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// jsonKeys returns the top-level keys of one JSON object in order, with
// repeats (encoding/json keeps only the last of a repeated key).
func jsonKeys(line string) ([]string, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// durationFields are the log fields that hold durations.
var durationFields = []string{"took", "timeout", "interval", "lease", "retry_in", "batch_delay"}

// TestLogLines runs a cluster with the process logger in JSON, puts and
// reads a file, and checks every line: no key twice (the coordinator's
// "datanode registered" line had "addr" twice, its own and the node's),
// and every duration a string with its unit ("1.5ms"), not a bare number.
func TestLogLines(t *testing.T) {
	is := is.New(t)
	var logs lockedBuffer
	log, err := newLogger(&logs, "debug", "json")
	is.NoErr(err) // the process logger
	cfg := roles.DefaultClusterConfig(t.TempDir())
	cfg.Log = log
	cfg.Coordinator.ChunkSize = 64 << 10
	cfg.Datanode.HeartbeatInterval = 100 * time.Millisecond
	c, err := roles.StartCluster(context.Background(), cfg)
	is.NoErr(err) // cluster starts
	cl, err := c.Client(client.DefaultConfig())
	is.NoErr(err)
	data := bytes.Repeat([]byte("dfs"), 50000)
	_, err = cl.Put(t.Context(), "/logged", bytes.NewReader(data), int64(len(data)), nil)
	is.NoErr(err) // a put
	_, err = cl.Get(t.Context(), "/logged", io.Discard, nil)
	is.NoErr(err) // and a get
	is.NoErr(c.Close())

	registered, durations := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		keys, err := jsonKeys(line)
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				t.Errorf("key %q twice in %s", k, line)
			}
			seen[k] = true
		}
		var fields map[string]any
		is.NoErr(json.Unmarshal([]byte(line), &fields))
		if fields["message"] == "datanode registered" {
			registered++
			is.True(fields["node_addr"] != nil) // the node's address has a name of its own
		}
		for _, f := range durationFields {
			v, ok := fields[f]
			if !ok {
				continue
			}
			durations++
			s, isString := v.(string)
			if _, err := time.ParseDuration(s); !isString || err != nil {
				t.Errorf("%s is %v, not a duration with its unit, in %s", f, v, line)
			}
		}
	}
	is.Equal(registered, 3) // every datanode's registration was logged
	is.True(durations > 0)  // and durations were
}
