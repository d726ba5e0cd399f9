"""Reference targets: faithful local servers so every demo and test runs without external services."""
