// Package e2e holds the tests that run dfs as its users do: they build
// the binary and start coordinators and datanodes as processes (process
// tests) or as containers of the image (TestContainers, make
// test-containers), and check the deployment files under deploy/. It has
// no code of its own outside its tests.
package e2e
