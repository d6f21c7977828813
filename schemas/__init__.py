"""JSON Schemas (Draft 2020-12) for scene files and the room config, shipped with the package."""
