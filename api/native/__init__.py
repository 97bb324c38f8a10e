"""tokenq's native API: /v1/jobs, /v1/batches, /v1/files (shared with OpenAI's Batch API), /healthz."""
