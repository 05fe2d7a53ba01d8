// Package e2e holds the tests that run dfs as its users do.
//
// They build the binary and start coordinators and datanodes as processes
// (the process tests) or as containers of the image (TestContainers, make
// test-containers), and check the deployment files under deploy/. The
// package has no code outside its tests.
package e2e
