"""Producers: decode video sources, sample, encode and enqueue frame batches."""
