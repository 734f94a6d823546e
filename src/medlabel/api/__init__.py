"""HTTP entry point: thin FastAPI routes over the services."""
