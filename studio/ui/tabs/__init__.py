"""The five tabs, each a `build(ctx, ...)` that lays out its components and wires them to the library."""
