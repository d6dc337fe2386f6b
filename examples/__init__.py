"""The example datasets the shipped recipes train on, with the scripts that generated them (package data)."""
