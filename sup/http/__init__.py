"""HTTP transport: parse, authenticate, call one domain service, serialise."""
