"""A user's own tool package, as an engineer would write one, outside the project's packages."""
