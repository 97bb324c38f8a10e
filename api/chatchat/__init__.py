"""Langchain-Chatchat's /other/completion."""
