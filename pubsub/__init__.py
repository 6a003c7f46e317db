"""Event delivery behind ``domain.ports.EventBus``: ``memory`` (one process, default) and
``redis`` (several instances behind a load balancer)."""
