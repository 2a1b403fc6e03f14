from django.apps import AppConfig


class StepwiseConfig(AppConfig):
    name = "stepwise"
    verbose_name = "Stepwise operations"
