"""The relay for a DMZ (docs/relay.md): the relay process and the server's side of its link.

The relay receives on public ports on behalf of servers that accept no inbound traffic and
carries what arrives, still encrypted, over the TLS link each server dialled out.
"""
