"""Environments of a project and replay between them."""
