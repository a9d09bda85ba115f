"""Traffic routers: one module per serving backend, all behind the interface in `base`."""
