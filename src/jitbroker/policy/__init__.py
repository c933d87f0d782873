"""Policy as code: CEL rules, compiled once, evaluated in order; first match wins, default deny."""
