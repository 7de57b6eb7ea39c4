"""Placeholder: fixtures for openbao land here."""
