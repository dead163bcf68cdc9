"""Scheduled jobs: one leader across all instances runs them, each entering ``loyalty`` code."""
