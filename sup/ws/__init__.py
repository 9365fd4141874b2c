"""WebSocket transport: the gateway, its connections and the hub that routes events to them."""
