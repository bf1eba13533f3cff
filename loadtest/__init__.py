"""Locust load tests that drive a broodlord vassal into reinforcement and show it (python -m loadtest)."""
