"""The engine boundary: services talk only to :class:`spar.engine.protocol.Engine`."""
