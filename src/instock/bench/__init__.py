"""Benchmarks: `instock bench …` commands that print JSON and draw what they measured."""
