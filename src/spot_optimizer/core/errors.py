"""Typed errors. Each carries what an operator needs to act: the request id and the pool where known."""

from __future__ import annotations


class SpotOptimizerError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(SpotOptimizerError):
    """A config file is missing, unreadable or corrupt. The message names the file."""


class JournalError(SpotOptimizerError):
    """The command journal cannot be read or written."""


class MetadataError(SpotOptimizerError):
    """The instance metadata service could not be reached or answered nonsense."""


class CloudError(SpotOptimizerError):
    """An AWS call failed. `code` is AWS's error code."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        operation: str = "",
        request_id: str | None = None,
        pool: str | None = None,
        aws_request_id: str | None = None,
    ) -> None:
        self.code = code
        self.operation = operation
        self.request_id = request_id
        self.pool = pool
        self.aws_request_id = aws_request_id
        parts = [message]
        if code:
            parts.append(f"code={code}")
        if operation:
            parts.append(f"operation={operation}")
        if request_id:
            parts.append(f"request_id={request_id}")
        if pool:
            parts.append(f"pool={pool}")
        if aws_request_id:
            parts.append(f"aws_request_id={aws_request_id}")
        super().__init__(" ".join(parts))
        self.message = message


class ThrottlingError(CloudError):
    retryable = True


class CapacityError(CloudError):
    """No capacity in that pool now: try the next pool."""

    retryable = True


class AuthError(CloudError):
    pass


class NotFoundError(CloudError):
    pass


class InvalidRequestError(CloudError):
    pass


class NotManagedError(SpotOptimizerError):
    """Refused: the instance does not carry ManagedBy=SpotOptimizer, so we never touch it."""

    def __init__(self, instance_id: str, action: str) -> None:
        self.instance_id = instance_id
        self.action = action
        super().__init__(
            f"refusing to {action} {instance_id}: it is not tagged ManagedBy=SpotOptimizer, "
            "so Spot Optimizer does not manage it"
        )
