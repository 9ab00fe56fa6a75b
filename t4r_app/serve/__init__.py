"""Serving stage: in-process recommendations, Triton export, the server process and its client."""
