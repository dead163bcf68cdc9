"""msgspec Structs that cross a boundary: request and response bodies, one module per area."""
