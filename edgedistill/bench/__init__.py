"""Benchmarking: latency and memory of student vs teacher, locally, over TVM RPC, and reports."""
