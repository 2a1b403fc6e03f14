from django.apps import AppConfig


class LeadershipConfig(AppConfig):
    """Read-mostly views across every program: SLOs and their budgets, plans at risk. It sits on
    top of `incidents` because its pages join SLOs with the steps and incidents that touched them."""

    name = "leadership"
