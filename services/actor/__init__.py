"""The actor service: generation with the served policy and adapter hosting."""
