"""What SUP tells its operators: Prometheus metrics and structured logs. Below every other layer, so any may report."""
