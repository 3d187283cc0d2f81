"""kv2d1's data files: the D1 DDL, JSON Schemas (KV payload shapes, the report), profiles."""
