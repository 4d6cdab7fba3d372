"""The application layer: what the API does, with no gRPC in it."""
