"""Shipped profiles (JSON): read by sim.profile.load_profile by name."""
