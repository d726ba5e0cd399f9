"""gevent I/O clients: thin shells that move bytes for the sans-I/O protocol cores."""
