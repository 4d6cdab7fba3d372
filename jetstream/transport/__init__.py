"""asyncio drivers that connect the sans-IO data-channel core to real UDP sockets."""
