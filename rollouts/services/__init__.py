class TransitionRefused(Exception):
    """A state change the rules forbid; the message says why, in words a user can act on."""


class InvalidInput(ValueError):
    """Input that can never be valid (a percentage of 140, an unknown variant)."""
