"""The OpenAI-compatible API: /v1/models, /v1/completions, /v1/chat/completions, and the files of
OpenAI's Batch API (its routes are native/batches.py and native/files.py)."""
