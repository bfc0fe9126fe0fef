"""The response cache: keys, backends (disk, memory, Redis), stream fill and replay."""
