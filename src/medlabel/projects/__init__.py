"""Projects and their members (schemas and workflow come with their own issues)."""
