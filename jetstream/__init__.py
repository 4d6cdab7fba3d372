"""jetstream: an open, gRPC-controlled file-transfer appliance for long, lossy networks."""

__version__ = "0.1.0"
