"""Whether this process works offline: ``HF_HUB_OFFLINE``, or a Hub that did not answer one short request.

huggingface_hub retries a refused or unresolvable connection five times with back-off (1 + 2 + 4 + 8 + 8 s:
25 s and eleven ``Retrying in 8s`` lines before one error) and has no setting to turn that off.  So before a
model, tokenizer or dataset file is fetched by name, the endpoint is asked once, with
:data:`PROBE_TIMEOUT` seconds and no retries (what :class:`~trajectory.sources.hub.HubSource` does on first
contact); when it does not answer, the fetch runs with ``local_files_only``: the cache is used when it holds
the files, and otherwise the client fails at once with the error our callers turn into one line.  The answer
is kept per endpoint for the life of the process.
"""

from __future__ import annotations

#: Seconds the one probe of the endpoint may take (a machine with no network is refused in milliseconds).
PROBE_TIMEOUT = 3.0
_answered: dict[str, bool] = {}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set, or the endpoint did not answer one request within the timeout."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    endpoint = constants.ENDPOINT.rstrip("/")
    if endpoint not in _answered:
        _answered[endpoint] = _answers(endpoint)
    return not _answered[endpoint]


def _answers(endpoint: str) -> bool:
    """Any HTTP response counts (even an error status): only a connection that fails is offline."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=PROBE_TIMEOUT)  # the client's own session, without its back-off
    except Exception:  # refused, unresolvable, timed out: whatever the transport raises, nothing answered
        return False
    return True
