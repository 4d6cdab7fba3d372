"""Where files go and how they are reached: path validation, sandboxes, user-rights file access."""
