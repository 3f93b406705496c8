"""A request body larger than the service accepts is refused with 413 before it is read whole:
at once from its Content-Length, else (chunked) as soon as the bytes received pass the limit."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException

DEFAULT_MAX_BODY_BYTES = 1_048_576  # 500 events (the most a request holds) take ~150 kB


class BodyLimit:
    """Pure ASGI middleware: nothing beyond `max_bytes` of a body is ever buffered."""

    def __init__(self, app: Any, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes:,} bytes"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            status, detail = (
                (413, self._detail()) if length.isdigit() else (400, "invalid Content-Length")
            )
            body = json.dumps({"detail": detail}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # FastAPI passes an HTTPException through as it is
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited, send)
