"""Locust glue: User classes whose clients fire one request event per measured round trip."""
