"""Background jobs: a named registry of job kinds, a job table with progress, Huey as the queue."""
