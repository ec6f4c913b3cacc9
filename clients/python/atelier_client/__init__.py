"""atelier_client: a small Python client of the atelierd daemon (gRPC API atelier.v1)."""

from .client import (AtelierError, Artifact, Client, Finished, Frame, Image, Job, Progress, Queued, Result, Started,
                     to_event)

__all__ = ["AtelierError", "Artifact", "Client", "Finished", "Frame", "Image", "Job", "Progress", "Queued", "Result",
           "Started", "to_event"]
