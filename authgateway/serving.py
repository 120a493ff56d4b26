"""waitress as `authgateway serve` runs it: its own error answers carry the gateway's headers.

A request that waitress refuses before the app runs (400 for a malformed request, 413 for a
declared body over the limit, 431 for headers over the limit) is answered by waitress's error
task, which Flask's middleware never sees. waitress picks that task from its channel class's
``error_task_class`` and the channel from its server's ``channel_class``: the server gets a
channel whose error task adds the security headers and an ``X-Request-ID`` first.
"""

from __future__ import annotations

import logging

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from .headers import SECURITY_HEADERS
from .log_setup import REQUEST_ID_HEADER, new_request_id

log = logging.getLogger(__name__)


class _HardenedErrorTask(ErrorTask):
    """waitress's own error answer, with the headers every answer of the gateway carries."""

    def execute(self) -> None:
        request_id = new_request_id()
        # Before the answer is written: waitress sends its head with the first write.
        self.response_headers.extend([*SECURITY_HEADERS, (REQUEST_ID_HEADER, request_id)])
        log.debug("waitress refused a request before the app: %s %s", self.request.error.code,
                  self.request.error.reason, extra={"request_id": request_id})
        super().execute()


class _HardenedChannel(HTTPChannel):
    error_task_class = _HardenedErrorTask


def harden_waitress_errors(sockets: dict) -> None:
    """Give every server in ``sockets`` (the map passed to ``waitress.create_server``) the
    channel whose error answers carry the gateway's headers."""
    for dispatcher in sockets.values():
        if getattr(dispatcher, "channel_class", None) is HTTPChannel:
            dispatcher.channel_class = _HardenedChannel
