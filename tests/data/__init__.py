"""Tests of protonet.data and the data layers."""
