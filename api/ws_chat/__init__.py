"""WebSocket chat (/ws/chat) in the shape of ChatGLM's websocket API."""
