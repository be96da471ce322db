"""Backends run one cache step of an engine directory; each implements the same narrow interface."""
