"""Compiled OS backends, one module per kernel mechanism (sources in backends/)."""
