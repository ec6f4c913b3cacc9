"""atelier.v1: messages and gRPC stubs generated from proto/atelier/v1 (scripts/update_python_stubs)."""
