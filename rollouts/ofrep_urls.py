from django.urls import path

from rollouts import ofrep

# No trailing slashes: OFREP clients build these paths themselves.
urlpatterns = [
    path("v1/evaluate/flags", ofrep.evaluate_flags, name="ofrep-evaluate-flags"),
    path("v1/evaluate/flags/<str:key>", ofrep.evaluate_flag, name="ofrep-evaluate-flag"),
]
