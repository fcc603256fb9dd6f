"""One module per external toolchain the host drives: what it is called, which Debian package
brings it, how to check that it really works, and how to report its own diagnostics."""
