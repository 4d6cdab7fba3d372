"""The gRPC adapter: thin servicers over the service layer, plus interceptors."""
