"""loadkit: honest load tests for real-time chat servers, built on Locust."""

__version__ = "0.1.0"
