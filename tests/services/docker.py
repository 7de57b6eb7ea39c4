"""Placeholder: fixtures for docker land here."""
