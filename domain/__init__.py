"""ChargeGraph's domain: entities, visibility policy, use cases and the ports they need.

This package imports nothing else of ours and no I/O library: the rules live here, the
adapters (store, pubsub, graph, ocpp_bridge) live around it.
"""
