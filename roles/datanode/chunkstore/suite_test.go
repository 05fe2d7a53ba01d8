package chunkstore_test

import (
	"testing"

	"github.com/dfs-project/dfs/roles/datanode/chunkstore/chunkstoretest"
)

func TestConformanceOS(t *testing.T)  { chunkstoretest.Run(t, chunkstoretest.OS) }
func TestConformanceMem(t *testing.T) { chunkstoretest.Run(t, chunkstoretest.Mem) }
