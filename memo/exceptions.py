"""Every error memo raises on purpose.

::

    MemoError
    ├── ConfigError (ValueError)          a bad argument, preset or environment variable
    ├── KeyDerivationError (TypeError)    an argument with no stable key encoding
    ├── BackendError                      the storage failed (alias: InfrastructureError)
    │   ├── BackendUnavailable            it cannot be reached
    │   │   └── BackendAuthError          it refused the credentials
    │   └── BackendTimeout                it did not answer within the deadline
    └── CodecError
        ├── EncodeError (TypeError)       a value that cannot be stored
        └── DecodeError                   stored bytes that cannot be read back

Each message says what went wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "BackendAuthError",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "CodecError",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "InfrastructureError",
    "KeyDerivationError",
    "MemoError",
]


class MemoError(Exception):
    """Base class of every error memo raises on purpose."""


class ConfigError(MemoError, ValueError):
    """An argument, preset or environment variable has a value memo cannot use."""


class KeyDerivationError(MemoError, TypeError):
    """A call argument has no stable, process-independent key encoding."""


class BackendError(MemoError):
    """The storage backend failed.

    ``scope`` is the part of the backend that failed: ``""`` for all of it, a node's
    address on a Redis Cluster (whose other nodes may still answer)."""

    scope = ""


class BackendUnavailable(BackendError):
    """The storage backend cannot be reached."""


class BackendAuthError(BackendUnavailable):
    """The storage refused the credentials (a wrong user name or password)."""


class BackendTimeout(BackendError):
    """The storage backend did not answer within the operation deadline."""


class CodecError(MemoError):
    """A value could not be encoded to, or decoded from, stored bytes."""


class EncodeError(CodecError, TypeError):
    """A value cannot be stored (an unsupported type, or larger than ``max_value_size``)."""


class DecodeError(CodecError):
    """Stored bytes could not be decoded.

    ``corrupt`` tells the two cases apart: True for bytes that are damaged (bad magic,
    checksum, signature, truncation) and should be deleted; False for bytes written by a
    newer memo or naming a type this process has not registered, which another process
    may still read and which must therefore be left alone.
    """

    def __init__(self, message: str, *, corrupt: bool) -> None:
        super().__init__(message)
        self.corrupt = corrupt


#: The usage guide's name for backend failures.
InfrastructureError = BackendError
