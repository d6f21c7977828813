"""The staff dashboard: a Starlette app with a JSON API and live updates."""
