//! Metrics: the process-wide recorder and its Prometheus rendering for `/metrics`.
