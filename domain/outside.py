"""Whether the request at hand has reached outside the service: a command written to a
charger (or relayed to the instance holding it), a payment provider asked to move
money, a receiver posted to. What the outside did cannot be taken back or known to be
undone, so such a request must not be run again by a retry that looks like the first.

``graph.http`` keeps track around a mutation sent with an idempotency key
(``outside_effects`` set to a list): its key is released (the retry runs it again) only
while nothing is marked here, for only then does the service know nothing was done; once
marked, its answer is kept whatever it says (a ``STORE_BUSY`` recording the charger's
answer, an unexpected error), and the client reads the outcome with a query.

The services mark the few choke points every such effect passes through, just before it
is attempted (``reaching_out``): ``CommandService._call`` (every charger command),
``PaymentService`` (a capture, a refund) and ``WebhookService.ping``. Marking before
rather than after is the safe side: an attempt whose outcome is not known (a timeout, a
lost connection) counts as done.
"""

from __future__ import annotations

from contextvars import ContextVar

#: What the request at hand attempted outside the service (``reaching_out``), when its
#: caller keeps track (``graph.http``); ``None`` when nobody does.
outside_effects: ContextVar[list[str] | None] = ContextVar("outside_effects", default=None)


def reaching_out(what: str) -> None:
    """Tells the request at hand (if it keeps track) that ``what`` (an OCPP action, a
    payment step) is being attempted outside the service now."""
    if (seen := outside_effects.get()) is not None:
        seen.append(what)
