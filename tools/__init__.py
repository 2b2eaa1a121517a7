"""Developer tooling: set-up, the process supervisor, the benchmark."""
