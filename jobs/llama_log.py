"""Route llama.cpp's log into Python logging with the right levels.

llama-cpp-python's own callback maps ggml's levels as they were before ggml renumbered them, so
llama.cpp's INFO lines come out as warnings; this callback uses ggml's current numbering
(ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 = continue the previous line).
"""

from __future__ import annotations

import ctypes
import logging

logger = logging.getLogger("llama.cpp")

_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_state = {"level": logging.DEBUG}
_callback = None  # kept referenced: llama.cpp holds a raw pointer to it


def route_llama_logs() -> None:
    global _callback
    if _callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        py_level = _state["level"] if level == 5 else _LEVELS.get(level, logging.INFO)
        _state["level"] = py_level
        if logger.isEnabledFor(py_level):
            message = text.decode("utf-8", errors="replace").rstrip()
            if message:
                logger.log(py_level, "%s", message)

    _callback = _log
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
