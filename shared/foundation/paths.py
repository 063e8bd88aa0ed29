"""Where the project lives: local state (outbox, payload log, retraining runs) goes under it."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
