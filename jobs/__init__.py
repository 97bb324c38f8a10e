"""The shared domain of tokenq: models, events, Redis keys and store, queue, settings."""
