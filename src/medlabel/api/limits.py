"""A pure-ASGI guard on request body size (JSON bodies and uploads have separate limits)."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medlabel.api.errors import error_response

__all__ = ["BodyLimitMiddleware"]


#: Raw file bodies (an upload session's PUT) get the upload limit, not the JSON one.
_RAW_UPLOADS = frozenset({"application/dicom", "application/octet-stream"})
_RAW_UPLOAD_PATH = re.compile(r"^/api/v1/projects/[^/]+/uploads/[^/]+/files/[^/]+$")


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body: int, max_upload: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        is_upload = ctype.startswith("multipart/") or (
            ctype in _RAW_UPLOADS and scope.get("method") == "PUT" and _RAW_UPLOAD_PATH.search(scope.get("path", ""))
        )
        limit = self.max_upload if is_upload else self.max_body
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, int(declared), limit)
            return
        if not is_upload:
            # Small bodies are read whole (bounded by the limit) and replayed, so an oversized
            # body without a Content-Length is refused before any route sees a byte of it.
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await self._reject(scope, receive, send, size, limit)
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return

        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(scope, receive, send, seen, limit)

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, size: int, limit: int) -> None:
        resp = error_response(
            413,
            "too_large",
            f"request body of {size} bytes exceeds the limit of {limit} bytes",
            {"limit": limit, "size": size},
        )
        await resp(scope, receive, send)
