"""Shared pieces of realtime-ai: config, Redis keys, wire format, errors, ledger."""
