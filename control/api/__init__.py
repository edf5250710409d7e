"""The REST control plane (FastAPI): the app, one router per resource, request/response models, metrics."""
