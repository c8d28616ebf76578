"""Locust suites for Feira: see README.md here."""
