"""The offline demo and the fake provider behind it, the tests and the benchmarks."""
