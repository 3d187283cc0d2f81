"""The `kv2d1` command line and wrangler-config resolution."""
