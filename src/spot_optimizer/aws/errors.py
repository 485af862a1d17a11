"""Map botocore's errors to our typed errors, carrying the operation, request id and pool."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from spot_optimizer.core.errors import (
    AuthError,
    CapacityError,
    CloudError,
    InvalidRequestError,
    NotFoundError,
    ThrottlingError,
)

THROTTLING_CODES = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException",
     "RequestThrottled", "SlowDown"}
)
CAPACITY_CODES = frozenset(
    {"InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
     "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded", "InsufficientReservedInstanceCapacity",
     "Unsupported"}
)
AUTH_CODES = frozenset(
    {"AuthFailure", "UnauthorizedOperation", "AccessDenied", "AccessDeniedException",
     "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "OptInRequired"}
)


def classify(code: str) -> type[CloudError]:
    if code in THROTTLING_CODES:
        return ThrottlingError
    if code in CAPACITY_CODES:
        return CapacityError
    if code in AUTH_CODES:
        return AuthError
    if code.endswith(".NotFound") or code.endswith("NotFound") or code == "NotFoundException":
        return NotFoundError
    if code.startswith("Invalid") or code in {"MissingParameter", "ValidationError", "ValidationException"}:
        return InvalidRequestError
    return CloudError


def from_client_error(
    exc: ClientError, operation: str, request_id: str | None = None, pool: str | None = None
) -> CloudError:
    err = exc.response.get("Error", {})
    code = str(err.get("Code", "Unknown"))
    message = str(err.get("Message", str(exc)))
    aws_request_id = exc.response.get("ResponseMetadata", {}).get("RequestId")
    cls = classify(code)
    return cls(
        message, code=code, operation=operation, request_id=request_id, pool=pool, aws_request_id=aws_request_id
    )


@contextlib.contextmanager
def translated(operation: str, request_id: str | None = None, pool: str | None = None) -> Iterator[None]:
    """Re-raise AWS errors inside the block as our typed errors (the cause is kept)."""
    try:
        yield
    except ClientError as exc:
        raise from_client_error(exc, operation, request_id, pool) from exc
    except NoCredentialsError as exc:
        raise AuthError(str(exc), code="NoCredentials", operation=operation, request_id=request_id,
                        pool=pool) from exc
    except EndpointConnectionError as exc:
        raise CloudError(str(exc), code="EndpointConnectionError", operation=operation,
                         request_id=request_id, pool=pool) from exc
    except BotoCoreError as exc:
        raise CloudError(str(exc), code=type(exc).__name__, operation=operation, request_id=request_id,
                         pool=pool) from exc
