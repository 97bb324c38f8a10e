"""Numbered events of a job's (or a batch's) log, as stored in its stream and published live."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    STATUS = "status"  #: a status transition: {status, at, attempt?}
    TOKEN = "token"  #: generated text: {text, n} (n = completion tokens so far)
    RESET = "reset"  #: a new attempt started after a crash: discard the text so far
    DONE = "done"  #: the final event of a job that did not fail: {status, result}
    ERROR = "error"  #: the final event of a failed job: {status, result}
    JOB = "job"  #: (batch log) one job reached a final status: {job_id, custom_id, status, counts}
    #: (never stored) a queued job's place in line: {position, estimated_start_at,
    #: service_rate_per_s}; sent with the seq of the event before it and no SSE id
    QUEUED = "queued"


#: Events after which a stream has nothing more to say.
FINAL_EVENTS = frozenset({EventType.DONE, EventType.ERROR})


#: Every stored event starts `{"seq":N,"type":"T",` (built in jobs/lua/_lib.lua and by
#: `encode` below), so streaming reads seq and type without parsing the whole JSON.
_HEAD = re.compile(r'\{"seq":(\d+),"type":"(\w+)",')


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    type: str
    raw: str  #: the JSON as stored, forwarded to clients without re-encoding

    @classmethod
    def parse(cls, raw: str | bytes) -> Event:
        text = raw.decode() if isinstance(raw, bytes) else raw
        head = _HEAD.match(text)
        if head is None:
            obj = json.loads(text)
            return cls(seq=obj["seq"], type=obj["type"], raw=text)
        return cls(seq=int(head.group(1)), type=head.group(2), raw=text)

    @staticmethod
    def encode(seq: int, type: str, data: dict[str, Any]) -> str:
        return f'{{"seq":{seq},"type":"{type}","data":{json.dumps(data, separators=(",", ":"))}}}'

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.raw)["data"]

    @property
    def final(self) -> bool:
        return self.type in FINAL_EVENTS
