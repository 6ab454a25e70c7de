from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from monitoring.prometheus import SupworkerCollector
        from supworker.metrics import register_collector

        register_collector(SupworkerCollector())
