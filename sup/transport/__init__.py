"""What both transports (HTTP and WebSocket) share: the services they reach, statuses and close codes, send schemas."""
