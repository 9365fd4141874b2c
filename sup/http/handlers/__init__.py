"""Thin handlers: parse (done by the Route), call one service method, serialise."""
