from django.apps import AppConfig


class SupworkerConfig(AppConfig):
    name = "supworker"
    verbose_name = "Messenger data and job records"
