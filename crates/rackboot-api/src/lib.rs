//! REST API (/api/v1), OpenAPI document, server-sent events, Prometheus metrics, token auth.
