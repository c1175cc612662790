"""Generated protobuf and gRPC stubs of the ``spar.v1`` contracts (``python -m spar.codegen``)."""
