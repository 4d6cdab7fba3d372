"""Watch folders: folders on this server whose files send themselves to a destination.

`model` is the data, `store` its rows, `folder` notices files and decides when one is
written (inotify, settle time), `service` turns them into transfers and acts on delivery.
"""
