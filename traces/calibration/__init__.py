"""Calibration statistics shipped as package data (JSON)."""
