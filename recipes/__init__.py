"""The shipped recipes, installed as package data of the studio (`studio recipes` lists them)."""
