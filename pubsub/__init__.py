"""Event delivery behind ``domain.ports.EventBus``: ``memory`` (one process, the default)
and ``redis`` (several instances behind a load balancer); ``open_event_bus(url)`` in
``pubsub.factory`` picks one.

``EventsDropped(count)`` is what a subscriber's stream yields, in band, right before the
next event it receives after its bounded queue overflowed: ``count`` older events were
dropped. It is defined in ``domain.events`` (the domain's live service passes it through
and the GraphQL layer turns it into ``droppedBefore``) and re-exported here, so there is
one class to test ``isinstance`` against.
"""

from domain.events import EventsDropped

__all__ = ["EventsDropped"]
