// Command etcd is the upstream etcd server at the version the pinned
// Kubernetes release depends on (Debian's etcd is too old for it).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
