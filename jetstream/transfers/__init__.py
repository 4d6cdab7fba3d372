"""The transfer engine: queues, sessions between servers, file data over the data channel."""
