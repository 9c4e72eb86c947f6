"""A server-sent-events decoder (the WHATWG rules the agent's streams follow), fed line by line
by the sync and the async client alike."""

from __future__ import annotations

from weldr_sdk.models import ServerSentEvent


class SSEDecoder:
    """Feed lines (without their end); `feed` returns an event when a blank line ends one."""

    def __init__(self) -> None:
        self.event, self.data, self.id = "", [], None  # type: tuple[str, list[str], str | None]
        self.retry_ms: int | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id" and "\0" not in value:
            self.id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self.data and not self.event:
            return None
        event = ServerSentEvent(event=self.event or "message", data="\n".join(self.data),
                                id=self.id)
        self.event, self.data = "", []
        return event
