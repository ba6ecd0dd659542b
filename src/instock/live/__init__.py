"""Live push: one bus listener per API process fans events out to SSE and WebSocket clients."""
