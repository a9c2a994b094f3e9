"""The service's endpoints, one router per concern: predict, feedback, admin, info (health,
model, metrics, the web page) and docs (the OpenAPI pages, served offline)."""
