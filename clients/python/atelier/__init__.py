"""The Atelier gRPC API's generated stubs (atelier.v1), shipped with the atelier-client package."""
