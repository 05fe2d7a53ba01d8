package metatest

import (
	"testing"

	"github.com/dfs-project/dfs/roles/coordinator/meta"
)

func TestMem(t *testing.T) {
	Run(t, func(t *testing.T) (meta.Store, func() meta.Store) { return NewMem(), nil })
}
