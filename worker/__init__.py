"""The tokenq worker: Celery tasks, the job runner, and the llama.cpp engines."""
