"""Inject AWS errors with botocore's event hooks (`before-send`), so retries and parsing run for real."""

from __future__ import annotations

from typing import Any

from botocore.awsrequest import AWSResponse


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body

    def read(self, *_: Any) -> bytes:
        return self._body


def ec2_error_xml(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error></Errors><RequestID>req-injected</RequestID></Response>"
    ).encode()


class FaultInjector:
    """Answer the next `times` calls of `operation` with an EC2 error; count every attempt seen."""

    def __init__(self, client: Any, operation: str, code: str, times: int, status: int = 400,
                 when: Any = None) -> None:
        self.code, self.remaining, self.status, self.when = code, times, status, when
        self.attempts = 0
        client.meta.events.register(f"before-send.ec2.{operation}", self._hook)

    def _hook(self, request: Any, **_: Any) -> AWSResponse | None:
        self.attempts += 1
        if self.remaining <= 0 or (self.when is not None and not self.when(request)):
            return None
        self.remaining -= 1
        body = ec2_error_xml(self.code, f"injected {self.code}")
        return AWSResponse(request.url, self.status, {"Content-Type": "text/xml"}, _Raw(body))  # type: ignore[arg-type]
