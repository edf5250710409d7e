"""The operator surface: the `rtai` command group, `rtai up`, status, subscribe, gpus, models, the REST API."""
