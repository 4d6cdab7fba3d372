"""One servicer per jetstream.v1 service; each RPC converts, delegates, converts back."""
