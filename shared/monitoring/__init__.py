"""Watching deployed models: the monitor (drift, calibration, performance, latency against the
reference saved when a version passed its gates), late labels, and the reactions to alerts
(retraining, rolling back a canary). See monitor.py for the math, service.py for the timer's
shell, reactions.py for what an alert sets off, policy.py for the `monitoring` policy section.
"""
