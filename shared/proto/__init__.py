"""Generated gRPC code (see scripts/gen-proto); only the API edges import it."""
