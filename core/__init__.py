"""Shared plumbing for every plain package: settings, PII masking, logging."""
