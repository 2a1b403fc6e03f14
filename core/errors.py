"""The domain's refusals, shared by every app: each maps to one HTTP status at the edge."""


class TransitionRefused(Exception):
    """A state change the rules forbid; the message says why, in words a user can act on."""


class InvalidInput(ValueError):
    """Input that can never be valid (a percentage of 140, an unknown variant)."""


class NotFound(InvalidInput):
    """The thing the request addresses does not exist (no step with that id)."""


def refusal_status(exc: Exception) -> int:
    """409 for a refused transition, 404 for a missing subject, 400 for bad input."""
    if isinstance(exc, TransitionRefused):
        return 409
    if isinstance(exc, NotFound):
        return 404
    return 400
