"""`make bench`: the operator with many ModelDeployments on the playground's real control plane,
Prometheus and operator process (see `bench.run`). Not part of the operator's package, nor of `make test`."""
