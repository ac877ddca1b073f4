"""Queue limits: how many jobs one client and all clients together may have queued or running,
every job counted as one (a report too: what it costs is checked against the job budgets of
``api/planning/``, not here).

A client is the bearer token a request carries (each token of ``LANDSCAPE_API_TOKENS`` with its
own allowance), or on a server without tokens the request's address: the peer's, or the one a
trusted proxy (``LANDSCAPE_TRUSTED_PROXIES``) names in ``X-Forwarded-For``. The header from any
other peer is ignored, so a client cannot name itself someone new for each request.

The counts are read from the jobs table, where every job records the client that queued it
(``Job.client``), so they hold across restarts and API processes. The guard (``api/guard.py``)
checks them before a submission's route runs and holds one lock from its check to the route's
answer, so concurrent submissions cannot all pass the same check.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from api.jobs import JobQueue
from api.settings import ApiToken, Settings

RETRY_AFTER = {"Retry-After": "30"}
COUNTS = "jobs queued or running; a report counts as one"  # what every limit counts
MAX_ADDRESS_CHARS = 64  # an address as stored with its jobs

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Client:
    """Who a submission counts against: ``key`` is stored with its jobs, ``label`` is how
    messages name it, ``limit`` its allowance."""

    key: str
    label: str
    limit: int


def token_client(token: ApiToken, settings: Settings) -> Client:
    limit = token.max_active_jobs or settings.max_active_jobs_per_client
    return Client(f"token:{token.name}", f"token {token.name!r}", limit)


def address_client(address: str, settings: Settings) -> Client:
    address = address[:MAX_ADDRESS_CHARS]
    return Client(f"address:{address}", f"address {address}", settings.max_active_jobs_per_client)


def caller_quota(
    settings: Settings,
    queue: JobQueue,
    given_token: str | None,
    peer: str,
    forwarded_for: Sequence[str],
) -> dict[str, Any]:
    """The allowance the caller's submissions count against, as ``GET /api/config`` shows
    it: its own token's (never another's) or, on a server without tokens, its address's. A
    caller without a valid token on a server with tokens gets no figures: it cannot submit."""
    token = settings.token_for(given_token) if given_token else None
    if settings.tokens and token is None:
        return {
            "client": None,
            "max_active_jobs": None,
            "active_jobs": None,
            "counts": COUNTS,
            "note": "send one of this server's tokens (Authorization: Bearer) to see its quota",
        }
    if token is not None:
        client = token_client(token, settings)
    else:
        trusted = parse_networks(settings.trusted_proxies)
        client = address_client(client_address(peer, forwarded_for, trusted), settings)
    return {
        "client": client.label,
        "max_active_jobs": client.limit,
        "active_jobs": queue.active_count(client=client.key),
        "counts": COUNTS,
    }


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: ``peer``, unless it is a trusted proxy; then the nearest address
    in ``X-Forwarded-For`` (read from the right: each proxy appends the peer it saw) that is
    not a trusted proxy itself. Entries left of it were written by the client and mean
    nothing."""
    if not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


@dataclass(frozen=True)
class Quota:
    """One submission's room in the queue: the client and the limits."""

    queue: JobQueue
    settings: Settings
    client: Client

    def refusal(self) -> str | None:
        """Why one more job may not be queued now, or None."""
        cap = self.settings.max_active_jobs
        total = self.queue.active_count()
        if total >= cap:
            return (
                f"the job queue is full ({total} queued or running, limit {cap}): counting "
                "every client's jobs, a report as one; try again when some have finished"
            )
        cap = self.client.limit
        mine = self.queue.active_count(client=self.client.key)
        if mine >= cap:
            return (
                f"you have {mine} jobs queued or running (limit {cap} per client): counting "
                f"the jobs queued by {self.client.label}, a report as one; wait for one to "
                "finish or cancel one"
            )
        return None
