"""Certificates over ACME: renewal schedule, certificate store, issuance."""
