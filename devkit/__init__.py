"""Not shipped: the scene generator and other helpers for tests, benchmarks and scripts."""
