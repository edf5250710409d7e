"""Analytics: tracking, zones, lines, dwell and events over a stream's results; sinks that deliver them."""
