"""Dify's completion-app API: /v1/completion-messages (blocking or streamed) and stop."""
