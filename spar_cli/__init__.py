"""The ``spar`` command line: the layer above the library (spar) and the services.

``spar_cli.main`` builds the parser from the modules of ``spar_cli.commands``; nothing in
spar or services imports this package (docs/architecture.md, the import contract).
"""
