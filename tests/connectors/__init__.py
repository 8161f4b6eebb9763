"""Inbound connector tests."""
