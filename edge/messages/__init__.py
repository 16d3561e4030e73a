"""Every message the box sends, built in one place; each has a JSON Schema in edge/schemas/."""
