"""One router per resource of the REST API: services, gpus, models, metrics."""

PREFIX = "/api/v1/realtime-ai"
