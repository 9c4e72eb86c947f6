"""Weldr Agent's Python SDK: `Client` (sync) and `AsyncClient` over the agent's HTTP API."""

from weldr_sdk.aio import AsyncClient, AsyncCommand, AsyncRun
from weldr_sdk.client import Client, Command, ExecStream, Run
from weldr_sdk.config import Config
from weldr_sdk.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    WeldrConnectionError,
    WeldrError,
    WeldrTimeout,
)
from weldr_sdk.models import Event, OutputChunk

__version__ = "0.1.0"
__all__ = [
    "APIError", "AsyncClient", "AsyncCommand", "AsyncRun", "AuthenticationError",
    "BadRequestError", "Client", "Command", "Config", "ConflictError", "Event", "ExecStream",
    "NotFoundError", "OutputChunk", "PayloadTooLargeError", "PermissionDeniedError",
    "RateLimitedError", "Run", "ServerError", "WeldrConnectionError", "WeldrError",
    "WeldrTimeout",
]
