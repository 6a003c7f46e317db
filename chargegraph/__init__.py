"""ChargeGraph's service shell: settings, the app factory (the one place that wires
everything) and the command line."""

__version__ = "0.4.0"
