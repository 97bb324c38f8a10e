"""WebSocket chat (/ws/chat): one job per client message, its text relayed as it grows.

Errors are frames (`{"status": 4xx/5xx, "error", "code"}`) and the connection stays open for the
next message; only a missing or bad API key closes it (after its frame, with 4000 + status).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from api.deps import Service, get_tenant
from api.errors import validation_message
from api.service import JobService
from api.streaming import Restarted, TextDelta
from api.ws_chat.protocol import ChatTurnRequest, error_frame, final_frame, progress_frame
from jobs.errors import TokenqError
from jobs.models import Job

logger = logging.getLogger(__name__)

router = APIRouter(tags=["ws-chat"])


@router.websocket("/ws/chat")
async def ws_chat(websocket: WebSocket, service: Service) -> None:
    await websocket.accept()
    try:
        tenant = get_tenant(websocket)
    except TokenqError as exc:
        await websocket.send_json(error_frame(exc.status_code, exc.message, exc.code))
        await websocket.close(code=4000 + exc.status_code, reason=exc.message[:120])
        return
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            try:
                turn = ChatTurnRequest.model_validate_json(raw)
                [job] = await service.submit([turn.to_job_request()], tenant, answer_waits=True)
            except ValidationError as exc:
                frame = error_frame(400, validation_message(exc.errors())[0], "invalid_request")
                await websocket.send_json(frame)
                continue
            except TokenqError as exc:
                await websocket.send_json(error_frame(exc.status_code, exc.message, exc.code))
                continue
            await _relay(websocket, service, turn, job)
    except WebSocketDisconnect:
        # The job is durable and keeps running, as after any stream disconnect: its id was in
        # every frame, so /v1/jobs/{id} has the answer.
        return


async def _relay(
    websocket: WebSocket, service: JobService, turn: ChatTurnRequest, job: Job
) -> None:
    """Frames of the text so far (202), then the final frame (200) or an error frame."""
    text = ""
    try:
        async for update in service.updates(job.id):
            if isinstance(update, TextDelta):
                if not update.text:
                    continue
                text += update.text
            elif isinstance(update, Restarted):
                text = ""  # a new attempt starts over; the frame below says so
            else:
                await websocket.send_json(_final(turn, update.job))
                return
            await websocket.send_json(progress_frame(turn, text, job.id))
    except TokenqError as exc:
        await websocket.send_json(error_frame(exc.status_code, exc.message, exc.code))
    except WebSocketDisconnect:
        raise
    except Exception:
        logger.exception("WebSocket chat relay of job %s failed", job.id)
        await websocket.send_json(error_frame(500, "internal error", "internal_error"))


def _final(turn: ChatTurnRequest, job: Job) -> dict[str, object]:
    if (why := job.failure) is None:
        return final_frame(turn, job)
    return {**error_frame(500, why, "job_failed"), "job_id": job.id}
