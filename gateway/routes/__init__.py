"""HTTP endpoints, one module per feature; each exposes `ENDPOINTS` for the app and the OpenAPI document."""
