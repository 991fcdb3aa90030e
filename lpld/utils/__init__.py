"""Small helpers shared by every stage: atomic file writes, metrics, devices, schedules."""
