from django.urls import path

from ledger import api, views

app_name = "ledger"
urlpatterns = [
    path("ledger/", views.ledger_list, name="list"),
    path("ledger/verify", views.ledger_verify_view, name="verify"),
    path("ledger/record", views.ledger_record, name="record"),
    path("api/ledger", api.ledger_entries, name="api-list"),
    path("api/ledger/verify", api.ledger_chain, name="api-verify"),
]
