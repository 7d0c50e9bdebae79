"""Benchmarks and the shared harness they and the integration tests use.

The harness: a private redis-server on a free port (plain, AOF, TLS), worker
launch, the one send path, and exact reconciliation of what was offered against
what was applied or dead-lettered. The ``iotsched`` command line registers the
bench commands and calls in here.
"""
