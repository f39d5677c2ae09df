"""Measured profile fragments (JSON), e.g. per-stage quality of a real small model."""
