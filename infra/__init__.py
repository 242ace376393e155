"""Shared infrastructure of the three packages (pretrain, downstream, disco_bench): the one-line
error type, typed-config validation, atomic checkpoint I/O and strict loading, the output-folder
lock, the environment a number was measured in, process groups and devices, lazy registries and the
CPU allocator setting. It imports none of the three: they all import it."""
