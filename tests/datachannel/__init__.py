"""Tests of the data channel core and the network simulator."""
