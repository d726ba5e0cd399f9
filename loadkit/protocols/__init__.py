"""Sans-I/O protocol logic: pure parsing and state, testable without sockets."""
