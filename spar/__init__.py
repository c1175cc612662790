"""spar: serve and improve instruction following with SPaR."""

__version__ = "0.1.0"
